"""The final table of a run: every eval metric next to the chance level of each zero-shot task."""
from __future__ import annotations

from jaxclr.logs.tables import format_table


def chance_levels(class_names) -> dict[str, float]:
    """Top-1 accuracy of guessing, per zero-shot task."""
    return {f"zeroshot/{task}_top1 (chance)": 1.0 / len(names) for task, names in class_names.items()}


def report_table(results, class_names) -> str:
    return format_table({**results, **chance_levels(class_names)})
