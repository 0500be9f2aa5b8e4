"""The optimiser from config.optim: AdamW, linear warmup + cosine decay, global-norm clipping.

Weight decay applies to weight matrices and embedding tables only (param names
ending in 'kernel' or 'embedding'); norms, biases and the logit scale/bias are
not decayed.
"""
from __future__ import annotations

import jax
import optax

DECAYED = ("kernel", "embedding")


def schedule(optim_cfg, total_steps: int) -> optax.Schedule:
    warmup = min(int(optim_cfg.warmup_steps), max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=optim_cfg.lr, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=optim_cfg.lr * optim_cfg.min_lr_ratio)


def _leaf_name(path) -> str:
    last = path[-1]
    return str(getattr(last, "key", getattr(last, "name", last)))


def decay_mask(params):
    """True for the leaves that get weight decay."""
    return jax.tree_util.tree_map_with_path(lambda p, _: _leaf_name(p).endswith(DECAYED), params)


def make(optim_cfg, total_steps: int) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(optim_cfg.grad_clip),
        optax.adamw(schedule(optim_cfg, total_steps), b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps,
                    weight_decay=optim_cfg.weight_decay, mask=decay_mask),
    )
