"""`prepare` throughput: the local path and the Beam DirectRunner on the same webdataset tars, in one run.

    python -m jaxclr.bench.prepare_throughput [--examples 2000] [--workers 2] [--image_size 224]

Writes `--examples` JPEG photos (crops of scikit-learn's two bundled photos at 256..427 px, half
scaled up to 512; nothing downloaded) as img2dataset-style tars of 250 keys, then prepares them
twice into a temporary data dir: `convert.prepare` with `--workers` processes, and
`beam_pipeline.prepare` on the DirectRunner in multi_processing mode with as many workers. Each
figure is examples written per second of wall time for the whole call (listing, decoding,
resizing to --image_size, writing shards and metadata; Beam's start-up included), and the two
datasets are checked to hold the same number of examples per split. Rates depend on the machine
and its load: read the ratio.
"""
from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
import time
from pathlib import Path

from jaxclr.bench.photos import photo_crops
from jaxclr.data.prepare import beam_pipeline, convert

KEYS_PER_TAR = 250


def write_tars(folder: Path, count: int, seed: int = 0) -> None:
    """`count` captioned JPEG photos as tars of KEYS_PER_TAR keys (<key>.jpg + <key>.txt)."""
    folder.mkdir(parents=True)
    crops = photo_crops(count, seed)
    for first in range(0, count, KEYS_PER_TAR):
        with tarfile.open(folder / f"{first // KEYS_PER_TAR:05d}.tar", "w") as tar:
            for i in range(first, min(first + KEYS_PER_TAR, count)):
                image = next(crops)
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=90)
                for name, data in ((f"{i:06d}.jpg", buffer.getvalue()), (f"{i:06d}.txt", f"photo {i}".encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def timed(fn, *args, **kwargs) -> tuple[dict, float]:
    start = time.perf_counter()
    report = fn(*args, **kwargs)
    return report, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--shard_size", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tars = Path(tmp) / "tars"
        write_tars(tars, args.examples)
        opts = dict(name="bench_prepare", image_size=args.image_size, shard_size=args.shard_size,
                    workers=args.workers, val_fraction=0.05, progress=False)
        local, local_s = timed(convert.prepare, "webdataset", str(tars),
                               convert.Options(data_dir=f"{tmp}/local", **opts))
        beam, beam_s = timed(beam_pipeline.prepare, "webdataset", str(tars),
                             convert.Options(data_dir=f"{tmp}/beam", **opts), runner="DirectRunner",
                             beam_options=f"--direct_running_mode=multi_processing "
                                          f"--direct_num_workers={args.workers}")
    counts = {r: {s: v["examples"] for s, v in rep["splits"].items()} for r, rep in (("local", local), ("beam", beam))}
    if counts["local"] != counts["beam"]:
        raise SystemExit(f"the two paths wrote different splits: {counts}")
    examples = sum(counts["local"].values())
    print(f"\nprepare, {args.examples} JPEG photos in tars -> {args.image_size} px JPEG, {args.workers} workers "
          f"({examples} examples written, splits {counts['local']})")
    print("| path | wall s | examples/s |")
    print("|---|---|---|")
    print(f"| local (--workers={args.workers}) | {local_s:.1f} | {examples / local_s:,.0f} |")
    print(f"| Beam DirectRunner (multi_processing, {args.workers} workers) | {beam_s:.1f} | {examples / beam_s:,.0f} |")


if __name__ == "__main__":
    main()
