"""Benchmarks (`make bench`): loss memory and time, GradCache micro-batches, input pipeline, step memory.

Each is `python -m jaxclr.bench.<name>` and reports ratios measured side by side in one run.
A top layer: may import anything below it (the trainer's parts, losses, data, config).
"""
