"""Input throughput of the train pipeline at 224 px from encoded JPEGs, for several grain worker counts.

    python -m jaxclr.bench.input_pipeline [--workers 0,1,2] [--examples 512] [--batches 64]

Builds once, in a temporary data dir, a caption dataset of `--examples` JPEG photos stored
encoded (`jaxclr.data.prepare` with image_size 0: decoded, centre-cropped and resized to
224 px when read), cut at random places and scales from scikit-learn's two bundled photos
(china.jpg and flower.jpg, 427 x 640; nothing downloaded). Then, in one run, times
`pipeline.train_batches` (one process reading the whole global batch) for each worker count:
examples/s over `--batches` batches after the first (which includes start-up), and the ratio
to 0 workers, the figure to read. Absolute rates depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from jaxclr import config as configlib
from jaxclr.bench.photos import photo_crops
from jaxclr.data import pipeline
from jaxclr.data.prepare import convert as prepare


def write_photos(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` JPEG crops (256..427 px squares, some scaled up to 512) and a CSV manifest."""
    rows = []
    for i, image in enumerate(photo_crops(count, seed)):
        image.save(folder / f"{i:05d}.jpg", quality=90)
        rows.append({"image": f"{i:05d}.jpg", "caption": f"photo number {i}"})
    manifest = folder / "captions.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, ["image", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def rate(config, batch_size: int, num_batches: int) -> float:
    """Examples/s of train_batches over `num_batches` batches after the first."""
    batches = pipeline.train_batches(config, batch_size)
    next(batches)   # start-up: workers, first decode
    start = time.perf_counter()
    for _ in range(num_batches):
        next(batches)
    return num_batches * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--batches", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        manifest = write_photos(photos, args.examples)
        data_dir = str(Path(tmp) / "tfds")
        prepare.prepare("manifest", str(manifest),
                        prepare.Options(name="bench_photos", data_dir=data_dir, image_size=0, progress=False))
        config = configlib.load("configs/clip.py:b16")
        config.data.update(name="bench_photos", data_dir=data_dir, image_size=224)
        rates = {}
        for workers in (int(w) for w in args.workers.split(",")):
            config.data.worker_count = workers
            rates[workers] = rate(config, args.batch_size, args.batches)
    base = rates.get(0)
    print(f"\ntrain pipeline, 224 px from encoded JPEGs ({args.examples} photos, batch {args.batch_size}, "
          f"{args.batches} batches timed)")
    print("| data.worker_count | examples/s | ratio to 0 workers |")
    print("|---|---|---|")
    for workers, value in rates.items():
        ratio = f"{value / base:.2f}x" if base else "-"
        print(f"| {workers} | {value:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
