"""What proving a checkpoint costs: save and restore with checksums against without, side by side.

Builds the train state of a config preset, then saves (and waits for the files) and restores it
`--repeats` times with `Checkpointer(verify=True)` and `verify=False` in alternation, and reports
the median times and their ratio. The checksums are one jitted reduction over the state at save
and one more over the restored state (jaxclr.trainer.checksums).

    python -m jaxclr.bench.checkpoint_cost                       # configs/clip.py:tiny, 7 pairs
    python -m jaxclr.bench.checkpoint_cost --config=configs/clip.py:study --repeats=9
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import jax

from jaxclr import config as configlib
from jaxclr import parallel
from jaxclr.trainer import state as state_lib
from jaxclr.trainer.checkpoint import Checkpointer


def timed_round(state, abstract, directory, step: int, verify: bool) -> tuple[float, float]:
    """(save seconds incl. writing the files, restore seconds) of one step with `verify`."""
    with Checkpointer(directory, every_steps=1, keep=2, verify=verify) as ckpt:
        start = time.perf_counter()
        ckpt.save(step, state, force=True)
        ckpt.wait()
        saved = time.perf_counter() - start
        start = time.perf_counter()
        jax.block_until_ready(ckpt.restore(abstract, step=step))
        return saved, time.perf_counter() - start


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m jaxclr.bench.checkpoint_cost", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/clip.py:tiny")
    p.add_argument("--repeats", type=int, default=7, help="alternating pairs (>= 5)")
    args = p.parse_args(argv)
    config = configlib.load(args.config)
    mesh = parallel.make_mesh(config.mesh)
    with jax.set_mesh(mesh):
        spec, state = state_lib.create(config, mesh)
    params = sum(x.size for x in jax.tree.leaves(state["params"]))
    times = {True: ([], []), False: ([], [])}
    with tempfile.TemporaryDirectory() as tmp:
        timed_round(state, spec.abstract, f"{tmp}/warm", 1, True)   # compiles the checksum function
        timed_round(state, spec.abstract, f"{tmp}/warm", 2, False)
        for i in range(args.repeats):
            for verify in ((True, False) if i % 2 == 0 else (False, True)):
                saved, restored = timed_round(state, spec.abstract, f"{tmp}/{verify}", i + 1, verify)
                times[verify][0].append(saved)
                times[verify][1].append(restored)
    med = {k: (statistics.median(s), statistics.median(r)) for k, (s, r) in times.items()}
    print(f"{args.config}: {params:,} params, {args.repeats} alternating pairs, median seconds")
    print("| | save (files written) | restore |")
    print("|---|---:|---:|")
    print(f"| without checksums | {med[False][0]:.3f} | {med[False][1]:.3f} |")
    print(f"| with checksums | {med[True][0]:.3f} | {med[True][1]:.3f} |")
    print(f"| ratio | {med[True][0] / med[False][0]:.3f}x | {med[True][1] / med[False][1]:.3f}x |")
    return {"params": params, "median": med}


if __name__ == "__main__":
    main()
