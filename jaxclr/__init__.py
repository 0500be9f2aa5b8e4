"""jaxclr: sharded dual-encoder contrastive pretraining (CLIP, SigLIP, DCL, m2-mix) in JAX/Flax.

    model = jaxclr.load('runs/vit_b32')      # a run, or released weights (docs/pretrained.md)
    model.encode_image(images), model.encode_text(['a cat']), model.zero_shot(images, ['cat', 'dog'])

Entry points: `python -m jaxclr.train`, `jaxclr.evaluate`, `jaxclr.sweep`, `jaxclr.aggregate`,
`jaxclr.study`, `jaxclr.data.prepare`, `jaxclr.data.train_tokenizer`, `jaxclr.import_weights`,
`jaxclr.export`, `jaxclr.classify`, `jaxclr.plan`, `jaxclr.bench.*`.
The folders and what each may import: docs/architecture.md. The top layer: may import anything.
"""


def __getattr__(name):
    """The public API, imported on first use (so `import jaxclr.<module>` stays light):
    `jaxclr.load(RUN_OR_SOURCE)` -> `jaxclr.Model` (jaxclr.pretrained.api)."""
    if name in ("load", "Model"):
        from jaxclr.pretrained import api
        return getattr(api, name)
    raise AttributeError(f"module 'jaxclr' has no attribute {name!r}")
