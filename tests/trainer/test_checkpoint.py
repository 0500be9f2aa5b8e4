"""Tests for jaxclr.trainer.checkpoint: sharded round trip, interval/keep policy, grain position, kill-safety,
format version."""
import gc
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxclr.trainer import checkpoint
from jaxclr.trainer.checkpoint import Checkpointer, CheckpointFormatError
from tests.helpers import REPO_ROOT

TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax 0.12's name for a step that is still being written


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def make_state(mesh, scale=1.0):
    """A train-state-like pytree: sharded and replicated params, optimiser moments, step, rng key data."""
    rows = NamedSharding(mesh, P("data"))
    repl = NamedSharding(mesh, P())
    w = scale * jnp.arange(16 * 8, dtype=jnp.float32).reshape(16, 8)
    return {
        "params": {"w": jax.device_put(w, rows), "b": jax.device_put(scale * jnp.ones(3), repl)},
        "opt": ({"mu": jax.device_put(w / 2, rows)}, jax.device_put(jnp.int32(5), repl)),
        "step": jax.device_put(jnp.int32(int(scale)), repl),
        "rng": jax.device_put(jax.random.key_data(jax.random.key(int(scale))), repl),
    }


def abstract_like(state, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def assert_tree_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def visible_steps(directory):
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def test_sharded_round_trip_into_requested_shardings(tmp_path, mesh):
    state = make_state(mesh, scale=4.0)
    expected = jax.tree.map(np.asarray, state)
    with Checkpointer(tmp_path / "ckpt", every_steps=2, keep=3) as ckpt:
        assert os.path.isabs(ckpt.directory)
        assert ckpt.save(4, state)
        # save() has copied the arrays to host: the caller may donate or free them at once.
        for leaf in jax.tree.leaves(state):
            leaf.delete()
    # A fresh manager (as after a restart) restores into shardings that differ from the saved ones.
    repl = NamedSharding(mesh, P())
    cols = NamedSharding(mesh, P(None, "data"))
    wanted = {
        "params": {"w": repl, "b": repl},
        "opt": ({"mu": cols}, repl),
        "step": repl,
        "rng": NamedSharding(mesh, P(None)),
    }
    ckpt = Checkpointer(tmp_path / "ckpt", every_steps=2, keep=3)
    assert ckpt.latest_step() == 4
    restored = ckpt.restore(abstract_like(expected, wanted))
    ckpt.close()
    assert_tree_equal(restored, expected)
    for leaf, sharding in zip(jax.tree.leaves(restored), jax.tree.leaves(wanted)):
        assert leaf.sharding == sharding


def test_interval_force_and_keep(tmp_path, mesh):
    ckpt = Checkpointer(str(tmp_path / "ckpt"), every_steps=3, keep=2)
    assert ckpt.latest_step() is None
    with pytest.raises(FileNotFoundError):
        ckpt.restore(make_state(mesh))
    assert [ckpt.should_save(s) for s in range(1, 8)] == [False, False, True, False, False, True, False]
    saved = [ckpt.save(s, make_state(mesh, s)) for s in range(1, 11)]
    assert saved == [s % 3 == 0 for s in range(1, 11)]  # no save at the first step, only multiples of 3
    assert ckpt.save(10, make_state(mesh, 10), force=True)  # end of training
    assert not ckpt.save(10, make_state(mesh, 10), force=True)  # already saved: not rewritten
    ckpt.wait()
    assert ckpt.all_steps() == [9, 10] and ckpt.latest_step() == 10
    assert visible_steps(ckpt.directory) == [9, 10]  # 3 and 6 were deleted (keep=2)
    state9 = make_state(mesh, 9)
    shardings = jax.tree.map(lambda x: x.sharding, state9)
    assert_tree_equal(ckpt.restore(abstract_like(state9, shardings), step=9), state9)
    assert_tree_equal(ckpt.restore(abstract_like(state9, shardings)), make_state(mesh, 10))
    ckpt.close()


def test_a_save_is_made_on_one_saver_thread_of_its_own(tmp_path, mesh, monkeypatch):
    """Checksums and the host copies run on one long-lived thread (its own malloc arena: module
    docstring, "Host memory"), never the caller's; a failure there reaches the caller."""
    seen = []
    real = checkpoint.checksums.state_checksums
    monkeypatch.setattr(checkpoint.checksums, "state_checksums",
                        lambda state: seen.append(threading.current_thread()) or real(state))
    with Checkpointer(tmp_path / "ckpt", every_steps=1, keep=2) as ckpt:
        manager_save = ckpt._manager.save
        ckpt._manager.save = lambda *a, **k: seen.append(threading.current_thread()) or manager_save(*a, **k)
        assert ckpt.save(1, make_state(mesh, 1)) and ckpt.save(2, make_state(mesh, 2))
        assert not ckpt.save(2, make_state(mesh, 2))   # already saved: decided on the caller's thread
        ckpt._manager.save = lambda *a, **k: 1 / 0
        with pytest.raises(ZeroDivisionError):
            ckpt.save(3, make_state(mesh, 3))
    assert len(seen) == 5 and len(set(seen)) == 1   # 2 saves x (checksums, orbax), then the failing one's checksums
    assert seen[0].name.startswith(checkpoint.SAVER_THREAD) and seen[0] is not threading.current_thread()


def test_saves_keep_no_python_objects(tmp_path, mesh):
    """Saves hold nothing after they finish: orbax's raw-byte counter read, which leaked ~24 value
    lists a save through tensorstore (module docstring), is skipped; with it the count below grew
    by ~480 over the 20 saves."""
    assert checkpoint.SKIPS_RAW_BYTE_COUNTERS
    state = make_state(mesh, 1)
    with Checkpointer(tmp_path / "ckpt", every_steps=1, keep=2) as ckpt:
        def saves(steps):
            for step in steps:
                assert ckpt.save(step, state)
                ckpt.wait()
            gc.collect()
            return len(gc.get_objects())
        before = saves(range(1, 31))   # warm-up: orbax's caches fill
        after = saves(range(31, 51))
    assert after - before < 20, f"{after - before} more Python objects after 20 saves"


def test_unfinished_step_directory_is_ignored(tmp_path, mesh):
    directory = tmp_path / "ckpt"
    with Checkpointer(directory, every_steps=1, keep=5) as ckpt:
        ckpt.save(1, make_state(mesh, 1.0))
    # What a save of step 2 killed half-way leaves behind: a temporary step directory.
    leftover = directory / f"2{TMP_SUFFIX}"
    (leftover / "state").mkdir(parents=True)
    (leftover / "state" / "_METADATA").write_text("{truncated")
    (leftover / "commit_success.txt").write_text("written just before the rename")

    ckpt = Checkpointer(directory, every_steps=1, keep=5)
    assert ckpt.latest_step() == 1 and ckpt.all_steps() == [1]
    state1 = make_state(mesh, 1.0)
    restored = ckpt.restore(abstract_like(state1, jax.tree.map(lambda x: x.sharding, state1)))
    assert_tree_equal(restored, state1)
    # Saving step 2 again works, and the leftover was cleaned up.
    assert ckpt.save(2, make_state(mesh, 2.0))
    ckpt.close()
    assert not leftover.exists() and visible_steps(directory) == [1, 2]


KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys
    import jax.numpy as jnp
    from jaxclr.trainer.checkpoint import Checkpointer

    directory, where, tmp_suffix = sys.argv[1:4]
    ckpt = Checkpointer(directory, every_steps=1, keep=3)
    ckpt.save(1, {"w": jnp.full((4, 3), 1.0), "step": jnp.int32(1)})
    ckpt.wait()

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "writing":   # killed when the meta item is serialised, beside the arrays being written
        import json
        real_dumps = json.dumps
        def dumps(obj, *args, **kwargs):
            if isinstance(obj, dict) and "format_version" in obj:
                die()
            return real_dumps(obj, *args, **kwargs)
        json.dumps = dumps
    else:  # "commit": everything written, killed at the rename that publishes the step
        real_rename = os.rename
        def rename(src, dst, *args, **kwargs):
            if os.path.basename(os.fspath(src)) == "2" + tmp_suffix:
                die()
            return real_rename(src, dst, *args, **kwargs)
        os.rename = rename
    ckpt.save(2, {"w": jnp.full((4, 3), 2.0), "step": jnp.int32(2)})
    ckpt.wait()
    print("save finished: the kill did not happen")
""")


@pytest.mark.parametrize("where", ["writing", "commit"])
def test_killed_save_keeps_previous_checkpoint(tmp_path, where):
    directory = str(tmp_path / "ckpt")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO_ROOT)
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, directory, where, TMP_SUFFIX],
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == -9, proc.stdout + proc.stderr[-3000:]
    assert os.path.isdir(os.path.join(directory, f"2{TMP_SUFFIX}"))  # the save was really under way
    if where == "commit":
        assert os.path.exists(os.path.join(directory, f"2{TMP_SUFFIX}", "commit_success.txt"))
    assert visible_steps(directory) == [1]

    ckpt = Checkpointer(directory, every_steps=1, keep=3)
    assert ckpt.latest_step() == 1
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = {"w": jax.ShapeDtypeStruct((4, 3), jnp.float32, sharding=one),
                "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=one)}
    restored = ckpt.restore(abstract)
    np.testing.assert_array_equal(restored["w"], np.full((4, 3), 1.0, np.float32))
    assert int(restored["step"]) == 1
    assert ckpt.save(2, {"w": jnp.full((4, 3), 2.0), "step": jnp.int32(2)})
    ckpt.close()
    assert visible_steps(directory) == [1, 2] and not os.path.exists(os.path.join(directory, f"2{TMP_SUFFIX}"))


def test_read_only_reader_leaves_a_live_save_alone(tmp_path, mesh):
    directory = tmp_path / "ckpt"
    with Checkpointer(directory, every_steps=1, keep=5) as ckpt:
        ckpt.save(1, make_state(mesh, 1.0))
    in_flight = directory / f"2{TMP_SUFFIX}"  # a trainer's save in progress
    in_flight.mkdir()
    reader = Checkpointer(directory, read_only=True)
    assert reader.latest_step() == 1
    assert not reader.should_save(5) and not reader.save(5, make_state(mesh, 5.0), force=True)
    reader.close()
    assert in_flight.exists() and visible_steps(directory) == [1]


def test_format_version_is_saved_and_checked(tmp_path, mesh, monkeypatch):
    directory = tmp_path / "ckpt"
    state = make_state(mesh, 2.0)
    abstract = abstract_like(state, jax.tree.map(lambda x: x.sharding, state))
    with Checkpointer(directory, every_steps=1) as ckpt:
        ckpt.save(1, state)
        ckpt.save(2, state)
    v = checkpoint.FORMAT_VERSION
    assert json.loads((directory / "1" / "meta" / "metadata").read_text())["format_version"] == v

    def refusal(step):
        with Checkpointer(directory, read_only=True) as reader, pytest.raises(CheckpointFormatError) as err:
            reader.restore(abstract, step=step)
        return str(err.value)

    what_to_do = ("use the jaxclr version that wrote it (see the run's run_info.json for its git commit), "
                  "or start a new workdir")
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", v + 1)    # code that reads a newer format
    assert refusal(1) == (f"checkpoint {directory}/1 has format version {v}, this code reads version {v + 1}; "
                          f"{what_to_do}")
    monkeypatch.undo()
    (directory / "1" / "meta" / "metadata").write_text(json.dumps({"format_version": 0}))
    assert refusal(1) == f"checkpoint {directory}/1 has format version 0, this code reads version {v}; {what_to_do}"
    shutil.rmtree(directory / "2" / "meta")                 # a checkpoint with no version
    assert refusal(2) == (f"checkpoint {directory}/2 has format version none (no meta item), this code reads "
                          f"version {v}; {what_to_do}")


# ------------------------------------------------------------------ integrity: fall back to a good step

def _three_checkpoints(tmp_path, mesh):
    """Steps 1, 2, 3 with states scaled 1, 2, 3."""
    directory = tmp_path / "ckpt"
    with Checkpointer(directory, every_steps=1, keep=None) as ckpt:
        for step in (1, 2, 3):
            ckpt.save(step, make_state(mesh, scale=float(step)))
    return directory


def _damage(step_dir, how):
    if how == "state_metadata":     # without the fallback: a misleading pytree structure error
        os.remove(next(p for p in (step_dir / "state").rglob("_METADATA")))
    elif how == "array_files":
        for p in (step_dir / "state").rglob("*"):
            if p.is_file() and p.name not in ("_METADATA", "_CHECKPOINT_METADATA", "_sharding"):
                p.write_bytes(b"\0garbage")
    elif how == "meta_item":
        (next(p for p in (step_dir / "meta").rglob("*") if p.is_file())).write_text("{not json")
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["state_metadata", "array_files", "meta_item"])
def test_damaged_latest_step_is_moved_aside_and_the_previous_restores(tmp_path, mesh, how, capsys):
    directory = _three_checkpoints(tmp_path, mesh)
    _damage(directory / "3", how)
    expected = jax.tree.map(np.asarray, make_state(mesh, scale=2.0))
    shardings = jax.tree.map(lambda x: x.sharding, make_state(mesh))
    with Checkpointer(directory, every_steps=1) as ckpt:
        ckpt.check_format(3, unreadable_ok=True)   # the train loop's early check lets damage through
        step, state = ckpt.restore_latest_good(abstract_like(expected, shardings))
        assert step == 2 and ckpt.all_steps() == [1, 2]
    assert_tree_equal(state, expected)
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "/3 does not restore" in warning[0] and "moved aside" in warning[0]
    assert (directory / "3.corrupt").is_dir()       # moved aside, never deleted
    assert visible_steps(directory) == [1, 2]


def test_no_restorable_step_is_one_clear_error_and_nothing_is_deleted(tmp_path, mesh):
    directory = _three_checkpoints(tmp_path, mesh)
    for step in (1, 2, 3):
        _damage(directory / str(step), "state_metadata")
    abstract = abstract_like(make_state(mesh), jax.tree.map(lambda x: x.sharding, make_state(mesh)))
    with Checkpointer(directory, every_steps=1) as ckpt:
        with pytest.raises(checkpoint.NoGoodCheckpoint, match="no checkpoint in .* restores") as err:
            ckpt.restore_latest_good(abstract)
    assert "\n" not in str(err.value)
    assert sorted(os.listdir(directory)) == ["1.corrupt", "2.corrupt", "3.corrupt"]
    # A later start does not silently begin afresh over them.
    with Checkpointer(directory, every_steps=1) as ckpt, pytest.raises(checkpoint.NoGoodCheckpoint):
        ckpt.restore_latest_good(abstract)


def test_empty_directory_restores_nothing(tmp_path, mesh):
    abstract = abstract_like(make_state(mesh), jax.tree.map(lambda x: x.sharding, make_state(mesh)))
    with Checkpointer(tmp_path / "fresh", every_steps=1) as ckpt:
        assert ckpt.restore_latest_good(abstract) == (None, None)


def test_read_only_reader_skips_a_damaged_step_without_moving_it(tmp_path, mesh):
    directory = _three_checkpoints(tmp_path, mesh)
    _damage(directory / "3", "state_metadata")
    expected = jax.tree.map(np.asarray, make_state(mesh, scale=2.0))
    ckpt = Checkpointer(directory, read_only=True)
    step, state = ckpt.restore_latest_good(abstract_like(expected, jax.tree.map(lambda x: x.sharding,
                                                                                make_state(mesh))))
    ckpt.close()
    assert step == 2 and visible_steps(directory) == [1, 2, 3]
    assert_tree_equal(state, expected)
