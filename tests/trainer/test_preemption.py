"""Preemption: SIGTERM/SIGINT save one checkpoint and exit 0; a second signal exits at once."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.helpers import REPO_ROOT, logged_steps

WATCH_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    from jaxclr.trainer.preemption import PreemptionWatch
    with PreemptionWatch(multi_process=False) as watch:
        assert not watch.requested(0)
        os.kill(os.getpid(), signal.SIG{name})
        time.sleep(0.2)
        print("requested", watch.requested(1), flush=True)
        os.kill(os.getpid(), signal.SIG{name})   # the second signal: exit at once
        time.sleep(5)
        print("still alive", flush=True)
""")


# What a shell does to SIGINT of a job started with `&` (pytest-xdist workers too), done by the child
# itself before anything else (no preexec_fn: forking this multithreaded JAX process is unsafe).
IGNORE_AT_START = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                   "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n")


@pytest.mark.parametrize("ignored", [False, True], ids=["default", "ignored-at-start"])
@pytest.mark.parametrize("name", ["TERM", "INT"])
def test_first_signal_sets_the_flag_second_exits_at_once(name, ignored):
    script = (IGNORE_AT_START if ignored else "") + WATCH_SCRIPT.format(name=name)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert "requested True" in out.stdout and "still alive" not in out.stdout
    assert out.returncode != 0
    assert f"received SIG{name}" in out.stderr and "send it again to exit at once" in out.stderr


def test_handlers_are_restored_after_the_loop():
    from jaxclr.trainer.preemption import PreemptionWatch
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionWatch(multi_process=False):
        assert signal.getsignal(signal.SIGTERM) != before
    assert signal.getsignal(signal.SIGTERM) == before


DRIVER = textwrap.dedent("""
    import sys
    from jaxclr import train
    from tests.helpers import tiny_run_config
    config = tiny_run_config({data_dir!r})
    config.train.update(total_steps=100_000, log_every=1, stop_at={stop_at})
    config.checkpoint.every = 1_000
    config.eval.every = 0
    train.train(config, {workdir!r})
""")


def run_driver(data_dir, workdir, stop_at=0):
    code = DRIVER.format(data_dir=data_dir, workdir=workdir, stop_at=stop_at)
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigterm_saves_the_current_step_exits_zero_and_resumes(data_dir, tmp_path):
    from jaxclr.trainer.checkpoint import Checkpointer
    workdir = str(tmp_path / "run")
    proc = run_driver(data_dir, workdir)
    deadline = time.time() + 300
    while len(logged_steps(workdir)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    sent = time.time()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert time.time() - sent < 60          # one step plus the save
    line = [x for x in out.splitlines() if x.startswith("preempted:")]
    assert len(line) == 1 and "run the same command again to resume" in line[0]
    step = int(line[0].split("step ")[1].split()[0])
    reader = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
    assert reader.latest_step() == step and step >= 3   # no steps lost (checkpoint.every is 1,000)
    reader.close()
    # Same config again (stop_at may change on a resume): it continues from that step.
    proc = run_driver(data_dir, workdir, stop_at=step + 2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"resumed from step {step}" in out
    assert logged_steps(workdir)[-2:] == [step + 1, step + 2]
