"""A run directory written by the earlier pins (jax 0.10.2, tests/fixtures/old_run) restores,
evaluates and resumes under today's: the checkpoint format, the saved config and the metric
files of old runs keep working after an upgrade."""
import json
import shutil

import numpy as np
import pytest

from jaxclr import evaluate, train
from jaxclr.trainer import run_info
from jaxclr.trainer.checkpoint import Checkpointer
from tests.helpers import REPO_ROOT, read_metrics

pytestmark = pytest.mark.slow
FIXTURE = f"{REPO_ROOT}/tests/fixtures/old_run"


@pytest.fixture
def old_run(tmp_path, data_dir):
    workdir = tmp_path / "old_run"
    shutil.copytree(FIXTURE, workdir)
    config = run_info.load_saved_config(workdir)
    config.data.data_dir = data_dir   # the fixture's data dir was a temporary one on the machine that made it
    return str(workdir), config


def test_the_fixture_was_written_by_the_earlier_pins():
    info = json.loads(open(f"{FIXTURE}/run_info.json").read())
    assert info["packages"]["jax"] == "0.10.2"
    assert json.loads(open(f"{FIXTURE}/final.json").read())["step"] == 8


def test_old_checkpoint_restores_and_evaluates_to_its_final_metrics(old_run):
    workdir, config = old_run
    step, results = evaluate.evaluate(config, workdir)
    saved = json.loads(open(f"{FIXTURE}/final.json").read())["metrics"]
    assert step == 8 and set(results) == set(saved)
    for name, value in saved.items():   # the same params, read back through another jax: the same evals
        np.testing.assert_allclose(results[name], value, atol=2e-4, err_msg=name)


def test_old_run_resumes_and_finishes(old_run, capsys):
    workdir, config = old_run
    config.train.update(total_steps=12, allow_config_change=True)   # 4 more steps than the old run planned
    results = train.train(config, workdir)
    assert "resumed from step 8" in capsys.readouterr().out
    steps = [r["step"] for r in read_metrics(workdir) if "loss" in r]
    assert steps[-2:] == [8, 12] and all(np.isfinite(r["loss"]) for r in read_metrics(workdir) if "loss" in r)
    assert json.loads(open(f"{workdir}/final.json").read())["step"] == 12 and results
    with Checkpointer(f"{workdir}/checkpoints", read_only=True) as ckpt:
        assert ckpt.all_steps()[-1] == 12
