"""Text transformer tower: token ids [B, L] -> pooled [B, width] float32.

The pad and end-of-text ids are the tokenizer's (`pad_id`, `eos_id`; jaxclr's tokenizers use 0
and 2, released models others). Pooling (model.text.pool): 'eos' reads the first EOS (CLIP),
'argmax' the first position of the largest id (OpenAI's and open_clip's CLIP, whose end token is
the vocabulary's last), 'mean' averages the non-pad tokens and masks padding out of attention,
'last' reads position L-1 with no padding mask (SigLIP, whose tokens are padded to a fixed length);
'auto' (the default) is 'eos' for a causal tower and 'mean' for a bidirectional one, what every
run before the option had. With ``patch_size = p > 1`` every p consecutive
tokens (bytes, or pieces) are embedded into one sequence position, like image patches: the
sequence is p times shorter (attention and MLP cost drop ~p-fold) while the
model still reads every byte; masks and EOS pooling then work per patch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from jaxclr.models.layers import PARAM_DTYPE, Encoder, compute_dtype

POOLS = ("auto", "eos", "argmax", "mean", "last")   # model.text.pool values (module docstring)


def resolve_pool(pool: str, causal: bool) -> str:
    """The pooling a model.text.pool value means ('auto': 'eos' if causal else 'mean')."""
    if pool not in POOLS:
        raise ValueError(f"model.text.pool must be one of {', '.join(map(repr, POOLS))}, got {pool!r}")
    return ("eos" if causal else "mean") if pool == "auto" else pool


def eos_positions(tokens: jax.Array, pad_id: int, eos_id: int) -> jax.Array:
    """Index of the first EOS per row; rows without EOS use their last non-pad token (0 if all pad)."""
    is_eos = tokens == eos_id
    first_eos = jnp.argmax(is_eos, axis=1)
    nonpad = tokens != pad_id
    last_nonpad = tokens.shape[1] - 1 - jnp.argmax(nonpad[:, ::-1], axis=1)
    last_nonpad = jnp.where(jnp.any(nonpad, axis=1), last_nonpad, 0)
    return jnp.where(jnp.any(is_eos, axis=1), first_eos, last_nonpad)


class TextTransformer(nnx.Module):
    """Transformer text encoder.

    Args:
      cfg_text: mapping with max_len, width, depth, heads, mlp_ratio, causal, patch_size, pool, act, ln_eps.
      dtype: compute dtype (name or dtype); parameters are float32.
      vocab_size, pad_id, eos_id: the tokenizer's vocabulary size (rows of the token table) and
        its padding and end-of-text ids (not config keys: they follow data.tokenizer).
      rngs: nnx.Rngs with a 'params' stream.
      remat, scan_layers, attention: memory options and the attention kernel of the encoder
        (model.remat, model.scan_layers, model.attention; see jaxclr.models.layers); they never
        change the function.

    Params: 'token' (nnx.Embed, table 'embedding'), 'pos_embedding' [1, max_len, width],
    'encoder' (blocks + final norm).
    """

    def __init__(self, cfg_text, dtype="float32", *, vocab_size: int, pad_id: int, eos_id: int, rngs: nnx.Rngs,
                 remat: str = "none", scan_layers: bool = False, attention: str = "xla"):
        self.dtype = compute_dtype(dtype)
        self.vocab_size, self.max_len = int(vocab_size), int(cfg_text["max_len"])
        self.pad_id, self.eos_id = int(pad_id), int(eos_id)
        self.width, self.causal = int(cfg_text["width"]), bool(cfg_text["causal"])
        self.patch = int(cfg_text["patch_size"])
        self.pool = resolve_pool(cfg_text["pool"], self.causal)
        if self.patch > 1 and self.pool not in ("eos", "mean"):
            raise ValueError(f"model.text.pool {self.pool!r} reads single tokens; use patch_size 1, or pool "
                             "'eos' / 'mean'")
        if self.width % self.patch:
            raise ValueError(f"model.text.width {self.width} must be divisible by patch_size {self.patch}")
        init = nnx.initializers.normal(stddev=0.02)
        self.token = nnx.Embed(self.vocab_size, self.width // self.patch, dtype=self.dtype,
                               param_dtype=PARAM_DTYPE, embedding_init=init, rngs=rngs)
        positions = -(-self.max_len // self.patch)
        self.pos_embedding = nnx.Param(init(rngs.params(), (1, positions, self.width), PARAM_DTYPE))
        self.encoder = Encoder(self.width, int(cfg_text["depth"]), int(cfg_text["heads"]),
                               int(cfg_text["mlp_ratio"]), dtype=self.dtype, rngs=rngs, remat=remat,
                               scan_layers=scan_layers, attention=attention, act=cfg_text["act"],
                               ln_eps=float(cfg_text["ln_eps"]))

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """tokens int [B, L] with L <= max_len -> features [B, width] float32."""
        if tokens.ndim != 2:
            raise ValueError(f"expected tokens [B, L], got shape {tokens.shape}")
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(f"token length {length} exceeds model.text.max_len {self.max_len}")
        if length % self.patch:
            tokens = jnp.pad(tokens, ((0, 0), (0, self.patch - length % self.patch)), constant_values=self.pad_id)
        x = rearrange(self.token(tokens), "b (n p) d -> b n (p d)", p=self.patch)
        length = x.shape[1]
        x = (x + self.pos_embedding[:, :length]).astype(self.dtype)
        if self.patch > 1:  # a patch is PAD when all its bytes are, EOS when it holds the first EOS, else -1
            grouped = rearrange(tokens, "b (n p) -> b n p", p=self.patch)
            eos_at = eos_positions(tokens, self.pad_id, self.eos_id)
            eos_patch = jnp.arange(length)[None] == eos_at[:, None] // self.patch
            all_pad = jnp.all(grouped == self.pad_id, -1)
            tokens = jnp.where(eos_patch, self.eos_id, jnp.where(all_pad, self.pad_id, -1))
        mask = jnp.tril(jnp.ones((length, length), bool))[None, None] if self.causal else None
        keep = tokens != self.pad_id
        if self.pool == "mean":
            mask = keep[:, None, None, :] if mask is None else mask & keep[:, None, None, :]
        x = self.encoder(x, mask)
        if self.pool in ("eos", "argmax"):
            pos = eos_positions(tokens, self.pad_id, self.eos_id) if self.pool == "eos" else jnp.argmax(tokens, 1)
            pooled = jnp.take_along_axis(x, pos[:, None, None], axis=1)[:, 0]
            return pooled.astype(jnp.float32)
        if self.pool == "last":
            return x[:, -1].astype(jnp.float32)
        weights = keep.astype(jnp.float32)[..., None]
        total = jnp.sum(x.astype(jnp.float32) * weights, axis=1)
        return total / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
