"""The command lines of jaxclr.import_weights, jaxclr.export and jaxclr.classify (thin entries call these).

    python -m jaxclr.import_weights --source=PATH --workdir=RUN [--tokenizer=DIR] [--heads=N --text_heads=N]
    python -m jaxclr.export --workdir=RUN --format=hf --out=DIR [--step=N]
    python -m jaxclr.classify --workdir=RUN --images=FOLDER --classes=a,b,c [--templates='a photo of a {}.']

Bad input is one `error:` line on stderr and exit code 2; nothing is written then.
"""
from __future__ import annotations

import pathlib
import sys

from absl import app, flags

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 2


def _errors():
    from jaxclr.data.text import TokenizerError
    from jaxclr.pretrained import export_hf, sources
    from jaxclr.trainer import init_from
    return (sources.SourceError, sources.CheckpointError, TokenizerError, export_hf.ExportError,
            init_from.InitFromError)


def import_main(argv) -> int:
    del argv
    from jaxclr.pretrained import import_run, sources
    f = flags.FLAGS
    try:
        imported = sources.read(f.source, tokenizer=f.tokenizer, heads=f.heads, text_heads=f.text_heads)
        root = import_run.write(imported, f.workdir, scan_layers=f.scan_layers)
    except _errors() as e:
        return _fail(str(e))
    print(f"imported {imported.format} ({imported.kind}) {imported.source} -> {root} "
          f"({len(imported.params)} tensors, step 0); tokenizer: {imported.tokenizer or 'none (pass --tokenizer)'}")
    return 0


def export_main(argv) -> int:
    del argv
    from jaxclr.pretrained import api, export_hf
    f = flags.FLAGS
    if f.format != "hf":
        return _fail(f"--format={f.format!r}: the only export format is 'hf' (a Hugging Face directory)")
    try:
        model = api.load(f.workdir, step=f.step)
        out = export_hf.export(model.config, model.params, f.out)
    except _errors() as e:
        return _fail(str(e))
    print(f"exported {f.workdir} -> {out}")
    return 0


def classify_main(argv) -> int:
    del argv
    import numpy as np
    from PIL import Image

    from jaxclr.pretrained import api
    f = flags.FLAGS
    classes = [c.strip() for c in f.classes.split(",") if c.strip()]
    if len(classes) < 2:
        return _fail(f"--classes={f.classes!r}: name at least two classes, comma-separated")
    folder = pathlib.Path(f.images)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        return _fail(f"--images={f.images}: no image files ({', '.join(IMAGE_SUFFIXES)}) in that folder")
    try:
        model = api.load(f.workdir)
        images = np.stack([model.resize(np.asarray(Image.open(p).convert("RGB"))) for p in files])
        probs = model.zero_shot(images, classes, f.templates or None)
    except _errors() as e:
        return _fail(str(e))
    for path, row in zip(files, probs):
        best = int(np.argmax(row))
        print(f"{path.name}\t{classes[best]}\t{row[best]:.3f}")
    return 0


def _run(main, define):
    define()
    app.run(lambda argv: sys.exit(main(argv)))


def import_cli():
    def define():
        flags.DEFINE_string("source", None, "Released weights: a Hugging Face directory, an OpenAI/open_clip "
                            ".safetensors (.pt/.bin with torch), or a big_vision SigLIP .npz.", required=True)
        flags.DEFINE_string("workdir", None, "The run directory to write (must not hold a run).", required=True)
        flags.DEFINE_string("tokenizer", "", "Tokenizer files when none are beside the weights (CLIP: a directory "
                            "with tokenizer.json or vocab.json + merges.txt; SigLIP: the SentencePiece .model).")
        flags.DEFINE_integer("heads", None, "Image-tower heads of an OpenAI/open_clip state dict (default "
                             "width // 64).")
        flags.DEFINE_integer("text_heads", None, "Text-tower heads of an OpenAI/open_clip state dict (default "
                             "width // 64).")
        flags.DEFINE_bool("scan_layers", True, "Store the blocks stacked (model.scan_layers).")
    _run(import_main, define)


def export_cli():
    def define():
        flags.DEFINE_string("workdir", None, "The run to export.", required=True)
        flags.DEFINE_string("format", "hf", "Target format: 'hf' (transformers CLIPModel / SiglipModel).")
        flags.DEFINE_string("out", None, "The directory to write.", required=True)
        flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest good one).")
    _run(export_main, define)


def classify_cli():
    def define():
        flags.DEFINE_string("workdir", None, "A run directory, or released weights (as for import_weights).",
                            required=True)
        flags.DEFINE_string("images", None, "A folder of images.", required=True)
        flags.DEFINE_string("classes", None, "Class names, comma-separated.", required=True)
        flags.DEFINE_multi_string("templates", None, "Prompt templates with {} for the class name (default: "
                                  "jaxclr.evals.prompts.DEFAULT_TEMPLATES).")
    _run(classify_main, define)
