"""Markdown tables: the one renderer every table of jaxclr goes through."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxclr.logs.metrics import to_float


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str, pad: bool = False) -> str:
    """`| a | b |` lines: a header, the alignment row and one line per row.

    `align` has one letter per column, 'l' or 'r'. With `pad`, every column is padded to its
    widest cell and the alignment row spans it (`|:----|-----:|`); without, cells are written
    as they are (`|---|---:|`).
    """
    if any(len(row) != len(header) for row in rows) or len(align) != len(header):
        raise ValueError(f"every row and `align` need {len(header)} columns")
    if pad:
        widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
        line = lambda cells: "| " + " | ".join(f"{c:<{w}}" if a == "l" else f"{c:>{w}}"
                                               for c, w, a in zip(cells, widths, align)) + " |"
        rule = "|" + "|".join(":" + "-" * (w + 1) if a == "l" else "-" * (w + 1) + ":"
                              for w, a in zip(widths, align)) + "|"
    else:
        line = lambda cells: "| " + " | ".join(map(str, cells)) + " |"
        rule = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def format_table(rows: Mapping[str, Any], precision: int = 4, header: tuple[str, str] = ("name", "value")) -> str:
    """A Markdown table `| name | value |`, columns padded to line up; floats to `precision` places."""

    def cell(value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, (bool, int, np.integer)):
            return str(int(value))
        return f"{to_float(value):.{precision}f}"

    body = [(str(name), cell(value)) for name, value in rows.items()]
    return markdown_table(header, body, "lr", pad=True)
