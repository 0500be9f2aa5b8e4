"""Shared transformer pieces for both towers: attention, pre-LN block, encoder stack.

Parameters are always float32 (``param_dtype``); ``dtype`` is the compute dtype.
Attention logits and the softmax are computed in float32 whatever ``dtype`` is.
No dropout and no stored RNG state, so a split model merges back deterministically.

Memory at scale (``Encoder``, set from ``model.remat`` / ``model.scan_layers``):

- ``remat='block'`` rematerialises every transformer block (``nnx.remat``, i.e.
  ``jax.checkpoint``) with the policy ``jax.checkpoint_policies.nothing_saveable``: only
  each block's input is kept for the backward pass and everything inside the block is
  recomputed (about one extra forward, ~1.3x step FLOPs). We do not use
  ``dots_with_no_batch_dims_saveable``: in a transformer block every projection
  (qkv, out, fc1, fc2) is a dot without batch dims, so that policy would still keep the
  qkv and 4x-wide MLP activations, which are most of a block's memory.
- ``scan_layers=True`` creates the ``depth`` blocks with stacked params (a leading layer
  axis, built with ``nnx.vmap``) and applies them with ``nnx.scan``: one block is traced
  and compiled instead of ``depth``. The names inside a block are unchanged
  (``blocks/attn/qkv/kernel`` instead of ``blocks/<i>/attn/qkv/kernel``), so weight decay
  by param name (``jaxclr.trainer.optim.param_role``) is the same. Scanned and unscanned encoders
  compute the same function (see ``stack_blocks``).

Released checkpoints (``act``, ``ln_eps``; model.image.act / model.text.act, .ln_eps): the MLP's
activation is ``'gelu_tanh'`` (the default, every run so far), ``'gelu_exact'`` (erf) or
``'quick_gelu'`` (x * sigmoid(1.702 x), OpenAI's CLIP); LayerNorm epsilon 1e-6 (default; OpenAI's
CLIP uses 1e-5). ``MAPHead`` is SigLIP's attention pooling (a learned probe attends to the tokens).

Attention (``model.attention``): ``'xla'`` is the einsum-softmax-einsum of ``SelfAttention``, the
default, whose numbers every run so far has; ``'dot_product'`` calls ``jax.nn.dot_product_attention``
with the same mask and scale, which on a GPU can pick cuDNN's fused kernel (bf16/fp16) and
elsewhere runs XLA's own composition. Both compute the same function with the same params
(tests/models/test_attention.py: outputs and gradients equal to 1e-6 on the CPU).
"""
from __future__ import annotations

import einops
import jax
import jax.numpy as jnp
from flax import nnx

PARAM_DTYPE = jnp.float32
# model.remat values -> jax.checkpoint policy (None: no remat); see the module docstring
REMAT_POLICIES = {"none": None, "block": jax.checkpoint_policies.nothing_saveable}
ATTENTIONS = ("xla", "dot_product")   # model.attention values (module docstring)
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# model.{image,text}.act values -> the MLP's activation (nnx.gelu is the tanh approximation)
ACTIVATIONS = {"gelu_tanh": nnx.gelu,
               "gelu_exact": lambda x: jax.nn.gelu(x, approximate=False),
               "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x)}
DEFAULT_EPS = 1e-6   # LayerNorm epsilon of every run before model.*.ln_eps existed


def compute_dtype(name) -> jnp.dtype:
    """Maps a config dtype name ("float32" | "bfloat16") or a dtype to a jnp dtype."""
    if not isinstance(name, str):
        return jnp.dtype(name)
    if name not in _DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {name!r}")
    return jnp.dtype(_DTYPES[name])


class SelfAttention(nnx.Module):
    """Multi-head self-attention with a fused qkv projection.

    ``mask`` (optional) is boolean, broadcastable to [B, heads, L, L]; True means
    "query may attend to key". ``attention`` picks the implementation (module docstring).
    """

    def __init__(self, width: int, heads: int, *, dtype, rngs: nnx.Rngs, attention: str = "xla"):
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        if attention not in ATTENTIONS:
            raise ValueError(f"model.attention must be one of {ATTENTIONS}, got {attention!r}")
        self.heads, self.attention = heads, attention
        self.qkv = nnx.Linear(width, 3 * width, dtype=dtype, param_dtype=PARAM_DTYPE, rngs=rngs)
        self.out = nnx.Linear(width, width, dtype=dtype, param_dtype=PARAM_DTYPE, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        if self.attention == "dot_product":
            q, k, v = einops.rearrange(self.qkv(x), "b l (n h d) -> n b l h d", n=3, h=self.heads)
            y = jax.nn.dot_product_attention(q, k, v, mask=mask)    # scale 1/sqrt(d), softmax in float32
            return self.out(einops.rearrange(y, "b l h d -> b l (h d)"))
        q, k, v = einops.rearrange(self.qkv(x), "b l (n h d) -> n b h l d", n=3, h=self.heads)
        return self.out(einops.rearrange(attend(q, k, v, mask), "b h l d -> b l (h d)"))


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Scaled dot-product attention on [B, heads, L, head_dim] arrays; logits and softmax in float32."""
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = logits / jnp.sqrt(jnp.float32(q.shape[-1]))
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bhkd->bhqd", weights, v)


def activation(name: str):
    """The function of a model.*.act value; ValueError naming the choices for others."""
    if name not in ACTIVATIONS:
        raise ValueError(f"model act must be one of {', '.join(map(repr, ACTIVATIONS))}, got {name!r}")
    return ACTIVATIONS[name]


class MLP(nnx.Module):
    """Two-layer MLP: width -> mlp_ratio * width -> width, activation ``act`` (module docstring)."""

    def __init__(self, width: int, mlp_ratio: int, *, dtype, rngs: nnx.Rngs, act: str = "gelu_tanh"):
        hidden = int(mlp_ratio * width)
        activation(act)   # validates
        self.act = act
        self.fc1 = nnx.Linear(width, hidden, dtype=dtype, param_dtype=PARAM_DTYPE, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, width, dtype=dtype, param_dtype=PARAM_DTYPE, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(ACTIVATIONS[self.act](self.fc1(x)))


def layer_norm(width: int, dtype, rngs: nnx.Rngs, eps: float = DEFAULT_EPS) -> nnx.LayerNorm:
    """LayerNorm with float32 "scale"/"bias" params, epsilon ``eps`` and the given compute dtype."""
    return nnx.LayerNorm(width, epsilon=float(eps), dtype=dtype, param_dtype=PARAM_DTYPE, rngs=rngs)


class Block(nnx.Module):
    """Pre-LN transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, *, dtype, rngs: nnx.Rngs, attention: str = "xla",
                 act: str = "gelu_tanh", ln_eps: float = DEFAULT_EPS):
        self.ln1 = layer_norm(width, dtype, rngs, ln_eps)
        self.attn = SelfAttention(width, heads, dtype=dtype, rngs=rngs, attention=attention)
        self.ln2 = layer_norm(width, dtype, rngs, ln_eps)
        self.mlp = MLP(width, mlp_ratio, dtype=dtype, rngs=rngs, act=act)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        x = x + self.attn(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))


def remat_policy(remat: str):
    """The checkpoint policy of a ``model.remat`` value (None for 'none'); ValueError for others."""
    if remat not in REMAT_POLICIES:
        raise ValueError(f"model.remat must be one of {', '.join(map(repr, REMAT_POLICIES))}, got {remat!r}")
    return REMAT_POLICIES[remat]


class Encoder(nnx.Module):
    """``depth`` pre-LN blocks followed by a final LayerNorm ("norm").

    ``remat`` ('none' | 'block') and ``scan_layers`` (stacked blocks applied with ``nnx.scan``)
    change memory and compile time only, and ``attention`` ('xla' | 'dot_product') the attention
    kernel only; none changes the function (module docstring).
    """

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: int, *, dtype, rngs: nnx.Rngs,
                 remat: str = "none", scan_layers: bool = False, attention: str = "xla", act: str = "gelu_tanh",
                 ln_eps: float = DEFAULT_EPS):
        remat_policy(remat)   # validates
        self.remat, self.scan_layers, self.depth = remat, bool(scan_layers), int(depth)
        if self.scan_layers:
            @nnx.split_rngs(splits=self.depth)
            @nnx.vmap(in_axes=0, out_axes=0)
            def stacked(r: nnx.Rngs) -> Block:
                return Block(width, heads, mlp_ratio, dtype=dtype, rngs=r, attention=attention, act=act, ln_eps=ln_eps)

            self.blocks = stacked(rngs)
        else:
            self.blocks = nnx.List([Block(width, heads, mlp_ratio, dtype=dtype, rngs=rngs, attention=attention,
                                          act=act, ln_eps=ln_eps) for _ in range(depth)])
        self.norm = layer_norm(width, dtype, rngs, ln_eps)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        def apply(block: Block, h: jax.Array) -> jax.Array:
            return block(h, mask).astype(h.dtype)

        if self.remat != "none":
            apply = nnx.remat(apply, policy=remat_policy(self.remat))
        if self.scan_layers:
            x = nnx.scan(apply, in_axes=(0, nnx.Carry), out_axes=nnx.Carry, length=self.depth)(self.blocks, x)
        else:
            for block in self.blocks:
                x = apply(block, x)
        return self.norm(x)


class MAPHead(nnx.Module):
    """Multihead attention pooling (SigLIP): a learned probe token attends to every token, then a
    residual LayerNorm + MLP; [B, L, width] -> [B, width]. Params: 'probe' [1, 1, width], 'q',
    'kv' (columns [k | v]), 'out', 'norm', 'mlp'."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, *, dtype, rngs: nnx.Rngs, act: str = "gelu_tanh",
                 ln_eps: float = DEFAULT_EPS):
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads, self.dtype = heads, dtype
        linear = dict(dtype=dtype, param_dtype=PARAM_DTYPE, rngs=rngs)
        self.probe = nnx.Param(nnx.initializers.xavier_uniform()(rngs.params(), (1, 1, width), PARAM_DTYPE))
        self.q = nnx.Linear(width, width, **linear)
        self.kv = nnx.Linear(width, 2 * width, **linear)
        self.out = nnx.Linear(width, width, **linear)
        self.norm = layer_norm(width, dtype, rngs, ln_eps)
        self.mlp = MLP(width, mlp_ratio, dtype=dtype, rngs=rngs, act=act)

    def __call__(self, x: jax.Array) -> jax.Array:
        probe = jnp.broadcast_to(self.probe[...], (x.shape[0], 1, x.shape[-1])).astype(self.dtype)
        q = einops.rearrange(self.q(probe), "b l (h d) -> b h l d", h=self.heads)
        k, v = einops.rearrange(self.kv(x), "b l (n h d) -> n b h l d", n=2, h=self.heads)
        y = self.out(einops.rearrange(attend(q, k, v), "b h l d -> b l (h d)"))
        y = y + self.mlp(self.norm(y))
        return y[:, 0]


def stack_blocks(blocks_state):
    """The params of an unscanned ``Encoder.blocks`` ({0: tree, 1: tree, ...}) stacked along a new
    leading axis: the params of the scanned ``Encoder.blocks`` with the same weights."""
    layers = [blocks_state[i] for i in sorted(blocks_state.keys())]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *layers)
