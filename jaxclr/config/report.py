"""The mechanism of the config checks (`jaxclr.trainer.validate` holds the checks themselves).

`Report` reads config values by dotted key and collects one-line problems; the helpers
phrase what to change (ranges, nearby multiples and divisors, the closest known name).
"""
from __future__ import annotations

import difflib
import math
import numbers

MISSING = object()   # what `Report.get` returns for a required key the config lacks (already reported)


class ConfigError(ValueError):
    """A config with problems; `problems` holds one `<key>: <problem>` line for each."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def range_text(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    return f"{'<' if high_open else '<='} {high}"


def examples(values, around, n=3) -> str:
    """'a, b or c': the n values closest to `around`, in order."""
    picked = [str(v) for v in sorted(sorted(values, key=lambda v: (abs(v - around), v))[:n])]
    return picked[0] if len(picked) == 1 else f"{', '.join(picked[:-1])} or {picked[-1]}"


def multiples(value: int, of: int) -> str:
    """'96 or 104': the multiples of `of` next to `value`."""
    below = value // of * of
    return examples([m for m in (below, below + of) if m > 0], value)


def divisors(n: int, around: int) -> str:
    return examples([d for d in range(1, n + 1) if n % d == 0], around)


def closest(name, known) -> str:
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Report:
    """Reads config values by dotted key and collects the problems found."""

    def __init__(self, config):
        self.config = config
        self.problems: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {' '.join(str(message).split())}")   # always one line

    def get(self, key: str, default=MISSING):
        """The value at `key`; a missing key gives `default`, or is a problem when there is none."""
        node = self.config
        for part in key.split("."):
            try:
                node = node[part]
            except (KeyError, TypeError, AttributeError):
                if default is MISSING:
                    self.add(key, "missing from the config; add it (configs/clip.py sets every key)")
                return default
        return node

    def number(self, key: str, *, integer=False, low=None, high=None, low_open=False, high_open=False,
               hint="", default=MISSING):
        """The value at `key` if it is a (finite) number in range, else None with the problem recorded."""
        value = self.get(key, default)
        if value is MISSING or (value is None and default is None):   # absent, or an optional None
            return None
        kind = numbers.Integral if integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
            self.add(key, f"{value!r} is not {'an integer' if integer else 'a finite number'}"
                     + (f"; {hint}" if hint else ""))
            return None
        if ((low is not None and (value <= low if low_open else value < low))
                or (high is not None and (value >= high if high_open else value > high))):
            self.add(key, f"{value} must be {range_text(low, high, low_open, high_open)}"
                     + (f"; {hint}" if hint else ""))
            return None
        return value

    def choice(self, key: str, known, what: str):
        """The value at `key` if it is one of `known`, else None with the problem recorded."""
        value = self.get(key)
        if value is MISSING:
            return None
        if value not in list(known):
            self.add(key, f"unknown {what} {value!r}{closest(value, known)}; use one of "
                     f"{', '.join(map(repr, sorted(known)))}")
            return None
        return value
