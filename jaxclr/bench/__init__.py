"""Benchmarks (`make bench`): loss memory and time, GradCache micro-batches, input pipeline, step memory;
the TPU plan (`plan`: the train step compiled by XLA:TPU for a named topology, libtpu from `tpu_env`,
chip figures from `chips`, FLOP and collective counts from `hlo_stats`) and the throughput / MFU kit.

Each is `python -m jaxclr.bench.<name>` and reports ratios measured side by side in one run.
A top layer: may import anything below it (the trainer's parts, losses, data, config).
"""
