"""The trainer's parts, which `jaxclr.train` runs in order; each importable and tested alone.

    state.py, optim.py, step.py     the train state, the optimiser, the jitted step (GradCache micro-batches)
    nonfinite.py                    the host-side policy for non-finite updates (stop / skip)
    checkpoint.py, init_from.py     orbax checkpoints with fallback; starting from another run's weights
    preemption.py, host_memory.py   SIGTERM / preemption notices; glibc's mmap threshold
    run_info.py, final_metrics.py   what a run directory records (config, environment, final metrics)
    validate.py                     a whole config checked against what every part accepts

May import the layers below: losses, models, data, evals, logs, config, parallel, paths.
"""
