"""The runs of a sweep: `--grid KEY=V1,V2,...` flags parsed, typed, combined and named.

A grid flag's values are split at the commas outside brackets and quotes (so
`eval.recall_ks=[1,5],[1,10]` is two tuples) and each is parsed the way `--config.KEY=V`
parses it (ml_collections config_flags: the parser of the config field's type: absl's
float/int/bool parsers, its tuple parser, strings as given). Several grids form their
product, the first one outermost; `zip_grids=True` pairs the i-th values instead (equal
lengths). A run is the `--config.KEY=TEXT` overrides of its values, passed to
`jaxclr.train` with the text as written, and a directory name made readable from them
(`loss.terms.m2mix=0.1,seed=2`). Every problem is a `GridError` with a one-line message
that says what to change. Importing this module does not import JAX.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import ml_collections

from jaxclr.config.values import GridError, Value, field_type, parse_value

OPENERS, CLOSERS = "([{", ")]}"
SAFE = re.compile(r"[^A-Za-z0-9._+=-]")


@dataclass(frozen=True)
class Run:
    name: str                    # the run's directory name under the sweep's workdir
    values: dict[str, Value]     # grid key -> its value in this run, in grid order

    def overrides(self) -> list[str]:
        return [f"--config.{key}={v.text}" for key, v in self.values.items()]


def split_values(text: str) -> list[str]:
    """`a,[1,2],'x,y'` -> ['a', '[1,2]', "'x,y'"]: commas inside brackets or quotes do not split."""
    items, current, depth, quote = [], [], 0, None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in OPENERS:
            depth += 1
        elif ch in CLOSERS:
            depth -= 1
            if depth < 0:
                raise GridError(f"unbalanced {ch!r} in {text!r}; write tuples as [1,5]")
        elif ch == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if depth or quote:
        raise GridError(f"unclosed bracket or quote in {text!r}")
    items.append("".join(current).strip())
    return items


def parse_grid(config: ml_collections.ConfigDict, flag: str) -> tuple[str, list[Value]]:
    """`KEY=V1,V2` -> (KEY, typed values)."""
    key, eq, text = flag.partition("=")
    key = key.strip().removeprefix("config.")
    if not eq or not key:
        raise GridError(f"--grid {flag}: write KEY=V1,V2,... (e.g. --grid seed=0,1,2)")
    kind = field_type(config, key)
    try:
        texts = split_values(text)
    except GridError as e:
        raise GridError(f"--grid {key}: {e}") from None
    values = [parse_value(key, kind, t) for t in texts]
    return key, values


def sanitise(text: str) -> str:
    """A value's text as part of a directory name: brackets, quotes and spaces dropped, inner
    commas as '-', any other character outside [A-Za-z0-9._+=-] as '_'."""
    text = re.sub(r"[\s'\"()\[\]{}]", "", text).replace(",", "-")
    return SAFE.sub("_", text) or "_"


def make_runs(config: ml_collections.ConfigDict, grid_flags: list[str], zip_grids: bool = False,
              fixed: tuple[str, ...] = ()) -> list[Run]:
    """The runs of the grids (product, or zipped); `fixed` are the keys set by --config.KEY overrides."""
    if not grid_flags:
        raise GridError("--grid: give at least one, e.g. --grid seed=0,1,2")
    grids: dict[str, list[Value]] = {}
    for flag in grid_flags:
        key, values = parse_grid(config, flag)
        if key in grids:
            raise GridError(f"--grid {key}: given twice; list all its values in one --grid")
        if key in fixed:
            raise GridError(f"--grid {key}: also set by --config.{key}; drop one of them")
        grids[key] = values
    if zip_grids:
        lengths = {k: len(v) for k, v in grids.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{k}: {n}" for k, n in lengths.items())
            raise GridError(f"--zip: the grids have different lengths ({shown}); give each the same number of values")
        combos = zip(*grids.values())
    else:
        combos = itertools.product(*grids.values())
    runs, names = [], {}
    for combo in combos:
        values = dict(zip(grids, combo))
        name = ",".join(f"{k}={sanitise(v.text)}" for k, v in values.items())
        if name in names:
            raise GridError(f"--grid: runs {names[name]} and {values_text(values)} get the same directory "
                            f"name {name!r}; make the values differ in letters or digits")
        names[name] = values_text(values)
        runs.append(Run(name, values))
    return runs


def values_text(values: dict[str, Value]) -> str:
    return ",".join(f"{k}={v.text}" for k, v in values.items())
