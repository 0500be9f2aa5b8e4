"""Config files: loading `path:arg` and checking command-line overrides.

Configs are `ml_collections.ConfigDict`s returned by `get_config(arg)` in a file
under configs/ and loaded through `ml_collections.config_flags`. Before the flags
are parsed, `check_overrides` turns an override of a key that does not exist into
a one-line error that names the closest valid keys. What a run directory records
about its config (config.json, the check on a restart) is `jaxclr.runinfo`.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import sys

import ml_collections


def load_module(path: str):
    """Imports a config file by path."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    name = "jaxclr_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sibling(config_file: str, name: str):
    """Another config module from the same folder (for configs built on a base config)."""
    return load_module(os.path.join(os.path.dirname(os.path.abspath(config_file)), name + ".py"))


def load(spec: str) -> ml_collections.ConfigDict:
    """`configs/clip.py:tiny` -> get_config('tiny') of that file."""
    path, _, arg = spec.partition(":")
    module = load_module(path)
    return module.get_config(arg) if arg else module.get_config()


def flat_keys(config, prefix="") -> list[str]:
    keys = []
    for key, value in config.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(flat_keys(value, full + "."))
    return keys


def unknown_key_message(config, key: str) -> str | None:
    """None if `key` (dotted) exists in config, else a one-line message naming the closest keys."""
    keys = flat_keys(config)
    if key in keys:
        return None
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see the config file for valid keys."
    return f"unknown config key '{key}': {hint}"


def check_overrides(argv, flag="config", default: str | None = None) -> None:
    """Exits with a one-line error if any `--config.KEY=...` names a key the config lacks.

    The config is the `--config=` of argv, else `default` (the flag's default file). With
    neither, overrides are an error: there is no config file to apply them to.
    """
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{flag}=")), default)
    overrides = [a[len(flag) + 3:].split("=", 1)[0] for a in argv if a.startswith(f"--{flag}.")]
    if not overrides:
        return
    if spec is None:
        sys.exit(f"error: --{flag}.{overrides[0]} needs --{flag}=FILE[:preset] to apply to")
    config = load(spec)
    for key in overrides:
        message = unknown_key_message(config, key)
        if message:
            sys.exit(f"error: {message}")
