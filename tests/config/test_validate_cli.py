"""Config validation from the command line: `error: <key>: ...` lines, exit code 2, nothing built."""
import os
import subprocess
import sys

from tests.helpers import REPO_ROOT

# ------------------------------------------------------------------ command line (about 2 s each: jax imports)

def run_cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO_ROOT)
    return subprocess.run([sys.executable, "-m", *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def error_lines(proc):
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return [line for line in proc.stderr.splitlines() if line.startswith("error: ")]


def test_train_cli_reports_bad_values_with_exit_code_2_and_builds_nothing(tmp_path):
    workdir, data_dir = tmp_path / "run", tmp_path / "data"
    data_dir.mkdir()
    proc = run_cli("jaxclr.train", "--config=configs/clip.py:tiny", f"--workdir={workdir}",
                   "--config.train.total_steps=0", "--config.train.batch_size=100",
                   f"--config.data.data_dir={data_dir}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert error_lines(proc) == [
        "error: train.total_steps: 0 must be >= 1; set the number of optimiser steps to run, e.g. 500",
        "error: train.batch_size: 100 is not divisible by the 8 data-parallel devices (mesh data=8 x fsdp=1); "
        "use a multiple of 8, e.g. 96 or 104"]   # the 8 CPU devices of conftest's XLA_FLAGS
    assert not workdir.exists() and os.listdir(data_dir) == []


def test_cli_unknown_key_and_bad_preset_exit_with_code_2(tmp_path):
    proc = run_cli("jaxclr.train", "--config=configs/clip.py:tiny", f"--workdir={tmp_path / 'run'}",
                   "--config.train.total_stepz=5")
    assert proc.returncode == 2
    [line] = error_lines(proc)   # the closest keys first (the rest of the list follows the config's keys)
    assert line.startswith("error: train.total_stepz: unknown config key; did you mean train.total_steps, ")
    proc = run_cli("jaxclr.evaluate", "--config=configs/clip.py:huge", f"--workdir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert error_lines(proc) == ["error: --config=configs/clip.py:huge: unknown preset 'huge'; choose one of "
                                 "['b16', 'b16_224', 'digits', 'l14', 'openai_b16', 'openai_b32', 'openai_l14', "
                                 "'s16', 'study', 'tiny', 'tiny_hf']"]
    assert not (tmp_path / "run").exists()
