"""What the config-validation tests share: the tiny preset with changes, and a check that a
config has exactly one problem, on a given key."""
import ml_collections

from jaxclr import config as configlib
from jaxclr.trainer import validate


def tiny(type_safe=True, **changes):
    """The tiny preset with `changes` ({'train__batch_size': 100} sets train.batch_size).

    type_safe=False copies it into a ConfigDict that takes values of any type (and has no
    FieldReference between data.max_len and model.text.max_len)."""
    config = configlib.load("configs/clip.py:tiny")
    if not type_safe:
        config = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = config
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


def split(problem: str) -> tuple[str, str]:
    key, sep, message = problem.partition(": ")
    assert sep and "\n" not in problem, problem
    return key, message


def assert_one(config, key, *phrases, **kwargs):
    """`config` has exactly one problem, on `key`, whose message contains every phrase."""
    found = validate.problems(config, kwargs.pop("num_devices", 8), **kwargs)
    assert len(found) == 1, found
    got_key, message = split(found[0])
    assert got_key == key, found
    for phrase in phrases:
        assert phrase in message, (phrase, found)
    return message
