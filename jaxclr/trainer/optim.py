"""The optimiser from config.optim: AdamW, linear warmup + cosine decay, global-norm clipping,
and the projection of the logit scale onto its bound after every update.

Weight decay is chosen by each parameter's *role*, read from its path in the
param tree (``param_role``):

    decayed      'weight'           kernels of dense and conv layers (path ends in ``kernel``)
                 'token_embedding'  the text tower's token table (``nnx.Embed``'s ``embedding``)
    not decayed  'bias'             biases of dense, conv and norm layers
                 'norm_scale'       LayerNorm scales
                 'position'         learned position embeddings (``pos_embedding``)
                 'class_token'      the ViT class token (``cls_embedding``)
                 'logit'            the logit log-scale and bias

Names are matched exactly, never by suffix, and a parameter with no known role is
an error, so a new layer must be classified before it trains. Layers stacked for a
scan keep their names (only a leading layer axis is added), so the rule is the same.

Frozen parameters (``trainable_mask``): ``model.freeze = 'image' | 'text'`` freezes that
tower, its projection included (the top-level modules of ``TOWER_OF_MODULE``), and
``model.learn_scale = False`` the logit parameters (scale and bias, in no tower). A frozen
parameter gets no update, no weight decay and no optimiser state: ``make`` then routes it
to ``optax.set_to_zero()`` through ``optax.multi_transform``, so Adam's moments exist only
for the trainable leaves and the global-norm clip sees only their gradients. With nothing
frozen ``make`` returns the plain chain (the optimiser state of older checkpoints).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

DECAYED_ROLES = frozenset({"weight", "token_embedding"})
_ROLE_OF_NAME = {"kernel": "weight", "embedding": "token_embedding", "pos_embedding": "position",
                 "cls_embedding": "class_token", "log_scale": "logit",
                 "probe": "class_token"}   # the MAP head's query token (SigLIP): a learned token like the class token
LOGIT_MODULE = "logit"   # TwoTower.logit holds 'log_scale' and (optionally) 'bias'
FREEZE = ("", "image", "text")   # the values of model.freeze ('': nothing frozen)
# The tower of each top-level module of TwoTower; the logit parameters belong to none.
TOWER_OF_MODULE = {"image": "image", "image_proj": "image", "text": "text", "text_proj": "text", LOGIT_MODULE: None}


def path_names(path) -> tuple[str, ...]:
    """('text', 'token', 'embedding') from a pytree key path of an nnx.State (the trailing
    '.value' attribute of each Param leaf is dropped; list indices become strings)."""
    names = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
    return tuple(names[:-1] if names and names[-1] == "value" else names)


def param_role(path) -> str:
    """The role of a parameter from its path (see the module docstring)."""
    names = path_names(path)
    name = names[-1]
    if LOGIT_MODULE in names[-2:-1]:
        return "logit"
    if name in _ROLE_OF_NAME:
        return _ROLE_OF_NAME[name]
    if name == "bias":
        return "bias"
    if name == "scale":
        return "norm_scale"
    raise ValueError(f"parameter {'/'.join(names)} has no weight-decay role; add its name to jaxclr.trainer.optim")


def decay_mask(params):
    """True for the leaves that get weight decay (roles in DECAYED_ROLES)."""
    return jax.tree_util.tree_map_with_path(lambda p, _: param_role(p) in DECAYED_ROLES, params)


def tower(path) -> str | None:
    """'image' or 'text': the tower a parameter belongs to (None for the logit parameters)."""
    names = path_names(path)
    if names[0] not in TOWER_OF_MODULE:
        raise ValueError(f"parameter {'/'.join(names)} is in no known module; add {names[0]!r} to "
                         "jaxclr.trainer.optim.TOWER_OF_MODULE")
    return TOWER_OF_MODULE[names[0]]


def _check_freeze(freeze) -> None:
    if freeze not in FREEZE:
        raise ValueError(f"model.freeze={freeze!r} is not one of {', '.join(map(repr, FREEZE))}")


def trainable_mask(params, freeze: str = "", learn_scale: bool = True):
    """True for the leaves the optimiser updates: every leaf except those of the tower `freeze`
    ('', 'image' or 'text') and, when not `learn_scale`, the logit scale and bias."""
    _check_freeze(freeze)

    def trainable(path, _):
        owner = tower(path)
        return learn_scale if owner is None else owner != freeze

    return jax.tree_util.tree_map_with_path(trainable, params)


def schedule(optim_cfg, total_steps: int) -> optax.Schedule:
    warmup = min(int(optim_cfg.warmup_steps), max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=optim_cfg.lr, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=optim_cfg.lr * optim_cfg.min_lr_ratio)


def make(optim_cfg, total_steps: int, lr: optax.ScalarOrSchedule | None = None, *, freeze: str = "",
         learn_scale: bool = True) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW with decay on the DECAYED_ROLES leaves; the leaves that
    ``trainable_mask(params, freeze, learn_scale)`` leaves out get zero updates and no state.

    ``lr`` defaults to the warmup + cosine ``schedule``; tests pass a constant.
    """
    lr = schedule(optim_cfg, total_steps) if lr is None else lr
    adamw = optax.chain(
        optax.clip_by_global_norm(optim_cfg.grad_clip),
        optax.adamw(lr, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps,
                    weight_decay=optim_cfg.weight_decay, mask=decay_mask),
    )
    _check_freeze(freeze)
    if not freeze and learn_scale:
        return adamw

    def labels(params):
        return jax.tree.map(lambda on: "train" if on else "frozen", trainable_mask(params, freeze, learn_scale))

    return optax.multi_transform({"train": adamw, "frozen": optax.set_to_zero()}, labels)


def max_log_scale(max_scale: float) -> jax.Array:
    """The bound on the logit log-scale, ln(max_scale), as a float32 scalar."""
    return jnp.asarray(math.log(float(max_scale)), jnp.float32)


def project(params, max_scale: float):
    """Clips the logit log-scale to at most ln(max_scale) (applied to the params after each update).

    The forward pass uses exp(log_scale) unclamped, so inside the bound the scale
    always has a gradient and can move back down (a clamp in the forward pass, as
    min(exp(log_scale), max), would have zero gradient past the bound and freeze it).
    """
    bound = max_log_scale(max_scale)

    def clip(path, leaf):
        return jnp.minimum(leaf, bound) if path_names(path)[-1] == "log_scale" else leaf

    return jax.tree_util.tree_map_with_path(clip, params)
