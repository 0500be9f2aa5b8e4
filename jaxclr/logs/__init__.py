"""Where a run's numbers go: metric writers (JSONL + TensorBoard, W&B), progress lines, tables, the profiler.

    metrics.py     MetricWriter: metrics.jsonl + TensorBoard, local or gs://, resumable
    progress.py    the progress line (rate, ETA) and durations
    tables.py      Markdown tables of name -> value
    wandb_sink.py  an optional W&B sink for MetricWriter
    profiler.py    a jax.profiler trace over a window of steps

May import only the foundations (paths, config).
"""
