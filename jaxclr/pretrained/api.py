"""The load-and-encode API: a trained or released model in a few calls.

    import jaxclr
    model = jaxclr.load('runs/vit_b32')          # a run directory, or a source: HF dir, .safetensors, .npz
    zimg = model.encode_image(images)            # uint8 [N, S, S, 3] -> float32 [N, D], unit norm
    ztxt = model.encode_text(['a photo of a cat', 'a dog'])   # or int ids [N, L]
    probs = model.zero_shot(images, ['cat', 'dog'])           # [N, C]
    model.resize(photo)                          # any uint8 [H, W, 3] -> [S, S, 3] as the model's eval does

Inputs are embedded ``batch_size`` rows at a time (the last batch padded), so each tower compiles
once. Runs on one device unless a mesh is given (params are then sharded like the trainer's).
Zero-shot scores are the softmax over classes of ``logit_scale * cos`` for a softmax-trained model
and ``sigmoid(logit_scale * cos + logit_bias)`` for a sigmoid-trained one (loss.terms.sigmoid).
"""
from __future__ import annotations

import json

import jax
import numpy as np

from jaxclr import parallel, paths
from jaxclr.data import resize as resize_lib
from jaxclr.data import text
from jaxclr.evals import prompts, zeroshot
from jaxclr.pretrained import import_run, sources
from jaxclr.trainer import init_from, run_info
from jaxclr.trainer import state as state_lib


class Model:
    """A model ready to embed: its config, params, tokenizer (None: texts only as ids) and mesh."""

    def __init__(self, config, params, mesh, batch_size: int = 64):
        self.config, self.params, self.mesh, self.batch_size = config, params, mesh, int(batch_size)
        spec, _ = state_lib.spec(config, mesh)
        self._fns = state_lib.embed_fns(spec.graphdef, mesh)
        try:
            self.tokenizer = text.from_config(config.data) if config.data.tokenizer_model or \
                config.data.tokenizer in ("bytes", "words", "sentencepiece") else None
        except text.TokenizerError:
            self.tokenizer = None
        self.image_size, self.max_len = int(config.data.image_size), int(config.data.max_len)
        logit = params["logit"]
        self.logit_scale = float(np.exp(np.asarray(logit["log_scale"][...])))
        self.logit_bias = float(np.asarray(logit["bias"][...])) if "bias" in logit else 0.0

    def tokenize(self, texts) -> np.ndarray:
        """int32 [N, data.max_len] ids of a list of strings (the model's own tokenizer)."""
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer files; load it with tokenizer=DIR, or pass token ids")
        return self.tokenizer.encode_batch(list(texts), self.max_len)

    def _run(self, fn, inputs) -> np.ndarray:
        with jax.set_mesh(self.mesh):
            return zeroshot.embed_in_chunks(lambda x: fn(self.params, x), inputs, self.batch_size)

    def encode_image(self, images) -> np.ndarray:
        """uint8 [N, S, S, 3] at the model's image size S -> float32 [N, D], L2-normalised."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"expected images [N, {self.image_size}, {self.image_size}, 3]; got {images.shape}: "
                             "use model.resize(image) for other sizes")
        return self._run(self._fns.image, images)

    def encode_text(self, texts) -> np.ndarray:
        """A list of strings, or int token ids [N, L] -> float32 [N, D], L2-normalised."""
        ids = np.asarray(texts) if not isinstance(texts, (list, tuple)) else None
        if ids is None or ids.dtype.kind not in "iu":
            ids = self.tokenize(texts)
        return self._run(self._fns.text, ids.astype(np.int32))

    def resize(self, image, mode: str | None = None) -> np.ndarray:
        """uint8 [H, W, 3] -> [S, S, 3] with the model's eval preprocessing (data.eval_resize) or `mode`."""
        return resize_lib.resize_image(np.asarray(image), self.image_size, mode or self.config.data.eval_resize)

    def zero_shot(self, images, class_names, templates=None) -> np.ndarray:
        """[N, C] class probabilities of `images` (module docstring); templates: prompts with '{}' for the
        class name (default: jaxclr.evals.prompts.DEFAULT_TEMPLATES)."""
        templates = list(templates or prompts.DEFAULT_TEMPLATES)
        classes = zeroshot.class_embeddings(lambda x: self._fns.text(self.params, x), list(class_names), templates,
                                            self.tokenize, self.batch_size)
        logits = self.logit_scale * self.encode_image(images).astype(np.float64) @ classes.T.astype(np.float64)
        if float(self.config.loss.terms.get("sigmoid", 0.0)) > 0:
            return (1 / (1 + np.exp(-(logits + self.logit_bias)))).astype(np.float32)
        logits -= logits.max(1, keepdims=True)
        return (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)


def is_run(path: str) -> bool:
    """Whether `path` is a jaxclr run directory (config.json + checkpoints/)."""
    root = paths.resolve(path)
    return (root / run_info.CONFIG_FILE).exists() and (root / "checkpoints").exists()


def load(run_or_source: str, *, step: int | None = None, mesh=None, tokenizer: str = "", batch_size: int = 64,
         heads: int | None = None, text_heads: int | None = None) -> Model:
    """A Model from a run directory (its checkpoint `step`, default the newest good one) or from a released
    checkpoint (read and converted in memory, nothing written; `tokenizer`, `heads` as for import_weights).
    `mesh`: default one device."""
    if is_run(run_or_source):
        config = run_info.load_saved_config(run_or_source)
        if tokenizer:
            config.data.tokenizer_model = tokenizer
        mesh = mesh or _one_device(config)
        with jax.set_mesh(mesh):
            spec, _ = state_lib.spec(config, mesh)
            source = init_from.locate(run_or_source)
            if step is not None:
                source = init_from.Source(source.directory, int(step))
            _, params = init_from.load_params(source, spec.abstract["params"])
        return Model(config, params, mesh, batch_size)
    imported = sources.read(run_or_source, tokenizer=tokenizer, heads=heads, text_heads=text_heads)
    config = import_run.config_for(imported, scan_layers=False)
    import_run.check_tokenizer(imported, config)
    mesh = mesh or _one_device(config)
    with jax.set_mesh(mesh):
        params = import_run.place(imported.params, config, mesh)
    return Model(config, params, mesh, batch_size)


def _one_device(config):
    with config.unlocked():
        config.mesh.update(data=1, fsdp=1, model=1)
    return parallel.make_mesh(config.mesh, jax.devices()[:1])


def describe(model: Model) -> str:
    """One JSON line: image size, context length, embedding width, logit scale and bias."""
    return json.dumps({"image_size": model.image_size, "max_len": model.max_len,
                       "embed_dim": int(model.config.model.embed_dim), "logit_scale": model.logit_scale,
                       "logit_bias": model.logit_bias})
