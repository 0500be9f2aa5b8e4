"""A run directory's saved config brought up to today's keys.

A config.json written before a key existed lacks it. `fill_missing` adds each such key with
the value the code used before the key existed, so an old run restores, resumes and evaluates
exactly as it did, and the code reads every key strictly (no `cfg.get(key, default)` that
could drift from the config files' defaults).
"""
from __future__ import annotations

import ml_collections

# key -> the value the code used while the key did not exist (not today's default where they differ)
ADDED_KEYS = {
    "data.tokenizer": "bytes",
    "data.tokenizer_model": "",
    "data.lowercase": False,
    "data.eval_resize": "crop_bilinear",
    "model.freeze": "",
    "model.learn_scale": True,
    "model.attention": "xla",
    "model.image.stem": (),
    "model.image.stem_impl": "conv",
    "model.image.ln_pre": False,
    "model.image.patch_bias": True,
    "model.image.act": "gelu_tanh",
    "model.image.ln_eps": 1e-6,
    "model.image.pixel_mean": (0.5, 0.5, 0.5),
    "model.image.pixel_std": (0.5, 0.5, 0.5),
    "model.image.proj": "linear",
    "model.text.pool": "auto",
    "model.text.act": "gelu_tanh",
    "model.text.ln_eps": 1e-6,
    "model.text.proj": "linear",
    "model.text.vocab_size": 0,
    "model.text.patch_size": 1,
    "train.micro_batches": 1,
    "train.allow_config_change": False,
    "train.malloc_mmap_threshold_kib": 0,
    "eval.batch_size": 256,
    "eval.evaluators": (),
    "eval.zeroshot_datasets": (),
    "eval.retrieval_datasets": (),
    "eval.recall_ks": (1, 5, 10),
    "eval.geometry_max_points": 8192,
    "eval.probe_c": 1.0,
}


def fill_missing(config: ml_collections.ConfigDict) -> list[str]:
    """Adds every key of ADDED_KEYS that `config` lacks (in place); returns the keys it added."""
    added = []
    for key, value in ADDED_KEYS.items():
        *sections, name = key.split(".")
        node = config
        for section in sections:
            if section not in node:
                node[section] = ml_collections.ConfigDict()
            node = node[section]
        if name not in node:
            node[name] = value
            added.append(key)
    return added
