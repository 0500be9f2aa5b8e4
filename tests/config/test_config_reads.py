"""No dead config: every key of every preset of every config file is read by the code.

Reads are recorded by wrapping ``ConfigDict.__getitem__`` (attribute access, ``get``,
``items`` and ``dict()`` all go through it; whole-config serialisation such as ``to_dict``
or ``str``, which touches every key, does not count as reading one) while a real 2-step tiny run with every loss
term switched on trains, restarts with an allowed config change and is evaluated, and while the large presets' state is
constructed abstractly with ``jax.eval_shape`` (nothing allocated). A key that nothing
reads is a knob that does nothing; this test fails on it.
"""
import contextlib
import os
import sys

import jax
import ml_collections
import pytest

from jaxclr import config as configlib
from jaxclr import evaluate, parallel, train
from jaxclr.trainer import state as state_lib
from tests.helpers import CONFIG_FILES, tiny_run_config

LARGE_PRESETS = ("s16", "b16", "l14")


def leaf_keys(config, prefix=""):
    keys = set()
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys |= leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def node_paths(config, prefix=""):
    """id(ConfigDict node) -> its dotted prefix."""
    out = {id(config): prefix}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(node_paths(value, f"{prefix}{key}."))
    return out


ACCESSORS = {"__getattr__", "__getitem__", "get", "items", "values", "iteritems"}


def is_a_read():
    """True unless this __getitem__ call comes from inside a bulk method of ConfigDict
    (to_dict, __str__, copy_and_resolve_references, __eq__, ...)."""
    frame = sys._getframe(2)   # the caller of the wrapped __getitem__
    while frame is not None and frame.f_globals.get("__name__", "").startswith("ml_collections"):
        if frame.f_code.co_name not in ACCESSORS:
            return False
        frame = frame.f_back
    return True


@contextlib.contextmanager
def recording(config, into: set):
    """Records the dotted names of the keys of ``config`` read inside the block."""
    paths = node_paths(config)
    original = ml_collections.ConfigDict.__getitem__

    def getitem(self, key):
        if id(self) in paths and isinstance(key, str) and is_a_read():
            into.add(paths[id(self)] + key)
        return original(self, key)

    ml_collections.ConfigDict.__getitem__ = getitem
    try:
        yield
    finally:
        ml_collections.ConfigDict.__getitem__ = original


def all_preset_configs():
    for path in CONFIG_FILES:
        module = configlib.load_module(path)
        for preset in ("tiny", *LARGE_PRESETS):
            yield f"{os.path.basename(path)}:{preset}", module.get_config(preset)


def unread(read: set) -> dict[str, list[str]]:
    return {name: sorted(leaf_keys(config) - read) for name, config in all_preset_configs()
            if leaf_keys(config) - read}


@pytest.fixture(scope="module")
def keys_read(data_dir, tmp_path_factory):
    read = set()
    config = tiny_run_config(data_dir)
    for term in config.loss.terms:            # every objective term on, so every loss key is used
        config.loss.terms[term] = 0.1
    config.train.update(total_steps=2, log_every=1)
    config.checkpoint.every = 1
    config.eval.every = 1
    config.eval.evaluators = (*config.eval.evaluators, "linear_probe")   # not in the presets: its keys are read here
    config.eval.probe_examples = 16
    workdir = str(tmp_path_factory.mktemp("reads"))
    with recording(config, read):
        train.train(config, workdir)
        config.optim.lr *= 2                     # a restart with a changed config, allowed
        config.train.allow_config_change = True
        train.train(config, workdir)
        evaluate.evaluate(config, workdir)
    mesh = parallel.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 1, "model": 1}))
    for preset in LARGE_PRESETS:
        large = configlib.load(f"configs/clip.py:{preset}")
        with recording(large, read), jax.set_mesh(mesh):
            state_lib.spec(large, mesh)   # abstract: jax.eval_shape, nothing allocated
    return read


@pytest.mark.slow
def test_every_config_key_is_read(keys_read):
    assert not unread(keys_read), f"config keys that no code reads: {unread(keys_read)}"


@pytest.mark.slow
def test_the_detector_sees_an_unread_key(keys_read):
    """Negative control: a key added to a preset and read by nothing is reported."""
    config = configlib.load("configs/clip.py:tiny")
    config.train.never_read = 1
    assert "train.never_read" in leaf_keys(config) - keys_read


def test_serialising_the_whole_config_reads_no_key():
    """Writing config.json (to_dict) or printing a config touches every key but reads none."""
    config = configlib.load("configs/clip.py:tiny")
    read = set()
    with recording(config, read):
        configlib.to_json(config)
        str(config)
        config.copy_and_resolve_references()
        assert config.train.batch_size and config.loss.get("impl")
    assert read == {"train", "train.batch_size", "loss", "loss.impl"}
