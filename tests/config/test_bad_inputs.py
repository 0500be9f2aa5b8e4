"""Bad inputs a user may type: each gives one `error:` line that says what to change and exits with
code 2 before any work (docs/reliability.md lists them all, with the earlier probes)."""
import json
import os
import subprocess
import sys

import pytest

from jaxclr.trainer import validate
from tests.helpers import REPO_ROOT, tiny_run_config

TINY = "--config=configs/clip.py:tiny"


def run_cli(module, *args, timeout=300):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def one_error_line(proc, *phrases, warnings=()):
    """The single `error:` line of a command that exited 2; other stderr lines only the `warnings` named."""
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not any(w in line for w in warnings)]
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "a_file").write_text("not a directory")
    (root / "broken.py").write_text("def get_config(:\n")
    (root / "garbled_run").mkdir()
    (root / "garbled_run" / "config.json").write_text("{not json")
    (root / "empty_run").mkdir()
    (root / "shards").mkdir()
    (root / "shards" / "00000.tar").write_bytes(b"<html>403</html>")
    return root


# ------------------------------------------------------------------ the four the issue found

def test_a_negative_term_weight_is_refused():
    config = tiny_run_config("")
    config.loss.terms.clip = -1.0
    (problem,) = validate.problems(config, num_devices=1)
    assert problem.startswith("loss.terms.clip: -1.0 must be >= 0")


def test_a_workdir_that_cannot_be_created(tmp_path):
    one_error_line(run_cli("jaxclr.train", TINY, "--workdir=/proc/jaxclr_run"),
                   "--workdir=/proc/jaxclr_run: cannot create this directory")


def test_a_warmup_longer_than_the_run_is_said_in_one_note():
    config = tiny_run_config("")
    config.optim.warmup_steps, config.train.total_steps = 100, 10
    (note,) = validate.notes(config)
    assert note.startswith("optim.warmup_steps=100 is longer than train.total_steps=10") and "0.1 x optim.lr" in note
    config.optim.warmup_steps = 10
    assert validate.notes(config) == []


# (the unreadable tar shard: tests/data/test_prepare.py::test_an_unreadable_tar_shard_is_skipped_...)

# ------------------------------------------------------------------ ten more

def test_evaluate_a_directory_that_is_not_a_run(files):
    one_error_line(run_cli("jaxclr.evaluate", f"--workdir={files / 'empty_run'}"), "no saved config", "--config=")


def test_evaluate_a_run_whose_config_is_not_json(files):
    one_error_line(run_cli("jaxclr.evaluate", f"--workdir={files / 'garbled_run'}"), "config.json is not valid JSON")


def test_evaluate_with_a_config_but_no_checkpoint(files):
    one_error_line(run_cli("jaxclr.evaluate", TINY, f"--workdir={files / 'empty_run'}"), "no checkpoint", "train first")


def test_evaluate_a_step_that_is_not_a_checkpoint():
    fixture = f"{REPO_ROOT}/tests/fixtures/old_run"
    one_error_line(run_cli("jaxclr.evaluate", f"--workdir={fixture}", "--step=5"),
                   "--step=5: not a checkpoint", "steps [8]")


def test_a_config_file_that_does_not_load(files, tmp_path):
    one_error_line(run_cli("jaxclr.train", f"--config={files / 'broken.py'}", f"--workdir={tmp_path}"),
                   "the file does not load (line 1): SyntaxError")


def test_a_data_dir_that_is_a_file(files, tmp_path):
    one_error_line(run_cli("jaxclr.train", TINY, f"--workdir={tmp_path}", f"--config.data.data_dir={files / 'a_file'}"),
                   "data.data_dir:", "is a file, not a directory")


def test_a_workdir_that_is_a_file(files):
    one_error_line(run_cli("jaxclr.train", TINY, f"--workdir={files / 'a_file'}"), "cannot create this directory")


def test_a_sweep_into_a_file(files):
    one_error_line(run_cli("jaxclr.sweep", TINY, f"--workdir={files / 'a_file'}", "--grid", "seed=0,1", "--dry-run"),
                   "is a file, not a directory")


def test_aggregate_a_directory_that_is_not_a_run(files):
    one_error_line(run_cli("jaxclr.aggregate", str(files / "empty_run")), "no metrics.jsonl", "run directory")


def test_prepare_from_shards_that_are_all_unreadable(files, tmp_path):
    line = one_error_line(run_cli("jaxclr.data.prepare", f"--webdataset={files / 'shards'}", "--name=x",
                                  f"--data_dir={tmp_path}"), "no usable examples",
                          warnings=["00000.tar: not a readable tar file"])   # the shard's own warning
    assert "'unreadable tar shard': 1" in line
    assert not json.dumps(sorted(os.listdir(tmp_path))).count("array_record")
