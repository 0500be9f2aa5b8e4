"""Config files: loading `path:arg` and checking command-line overrides.

Configs are `ml_collections.ConfigDict`s returned by `get_config(arg)` in a file
under configs/ and loaded through `ml_collections.config_flags`. Before the flags
are parsed, `check_overrides` turns an override of a key that does not exist (or a
config file that does not load) into one-line errors that name the closest valid keys.
Command-line mains report usage errors with `exit_with_errors`: one `error: ...` line
each on stderr and exit code 2; the checks of the config's values are
`jaxclr.trainer.validate`. What a run directory records about its config (config.json, the
check on a restart) is `jaxclr.trainer.run_info`.
"""
from __future__ import annotations

import difflib
import importlib.util
import json
import os
import sys
from typing import Any, NoReturn

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


def to_json(config) -> dict:
    """The config as plain JSON data (what a run's config.json holds): tuples become lists."""
    return json.loads(json.dumps(config.to_dict(), default=str))


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; an empty dict is kept as a leaf."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def flat_keys(config) -> list[str]:
    """Every dotted key of a ConfigDict, sections included ('model', 'model.text', 'model.text.width')."""
    keys = {}
    for leaf in flatten(config.to_dict()):
        parts = leaf.split(".")
        keys.update(dict.fromkeys(".".join(parts[:i]) for i in range(1, len(parts) + 1)))
    return list(keys)


def unknown_key_message(config, key: str) -> str | None:
    """None if `key` (dotted) exists in config, else `<key>: unknown config key; ...` naming the closest keys."""
    keys = flat_keys(config)
    if key in keys:
        return None
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see the config file for valid keys."
    return f"{key}: unknown config key; {hint}"


def override_problems(argv, flag="config", default: str | None = None) -> list[str]:
    """One line per problem of the `--config.KEY=...` overrides in argv ([] if none).

    The config is the `--config=` of argv, else `default` (the flag's default file). With
    neither, overrides are a problem: there is no config file to apply them to. A config
    file named by `--config=` that does not load (no such file, unknown preset) is one too.
    """
    given = next((a.split("=", 1)[1] for a in argv if a.startswith(f"--{flag}=")), None)
    spec = given or default
    overrides = [a[len(flag) + 3:].split("=", 1)[0] for a in argv if a.startswith(f"--{flag}.")]
    if not overrides and given is None:
        return []
    if spec is None:
        return [f"--{flag}.{overrides[0]}: needs --{flag}=FILE[:preset] to apply to"]
    try:
        config = load(spec)
    except (FileNotFoundError, ValueError) as e:
        return [f"--{flag}={spec}: {e}"]
    except Exception as e:  # noqa: BLE001 - a config file that does not run (a syntax error, a bad import)
        where = f" (line {e.lineno})" if isinstance(e, SyntaxError) and e.lineno else ""
        return [f"--{flag}={spec}: the file does not load{where}: {type(e).__name__}: {str(e).splitlines()[0]}"]
    return [m for m in (unknown_key_message(config, key) for key in overrides) if m]


def exit_with_errors(problems) -> NoReturn:
    """Prints each problem as one line `error: <problem>` on stderr and exits with code 2 (a usage error)."""
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    sys.exit(2)


def check_overrides(argv, flag="config", default: str | None = None) -> None:
    """Exits (code 2, `error: ...` lines) if `override_problems` finds any; see there."""
    problems = override_problems(argv, flag, default)
    if problems:
        exit_with_errors(problems)
