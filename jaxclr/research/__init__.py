"""Research tools around the trainer: sweeps over config grids, their tables and plots, study verdicts.

    sweep.py      `python -m jaxclr.sweep`: run, resume and tabulate a grid of runs
    grid.py       typed --grid values and run names
    aggregate.py  mean +- std of finished runs (`python -m jaxclr.aggregate`)
    plots.py      the sweep's plots
    study.py      a study's tables and verdicts (`python -m jaxclr.study`)

The top layer: may import anything below; nothing imports it but the thin entry modules.
"""
