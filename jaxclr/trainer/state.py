"""The train state: model params, optimiser state, step and RNG, with their shardings.

The model is a flax.nnx `TwoTower`; the state keeps only its params (an
`nnx.State`) next to the `graphdef`, so the train step is a plain function of
pytrees that `jax.jit` shards with `NamedSharding`s. Shapes come from
`jax.eval_shape` before anything is allocated.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxclr import parallel
from jaxclr.data import text
from jaxclr.models import TwoTower, vit
from jaxclr.models import text as text_tower
from jaxclr.trainer import optim


@dataclasses.dataclass(frozen=True)
class StateSpec:
    """Everything about the train state except its values: the model graph, the optimiser, the
    abstract state (ShapeDtypeStructs with .sharding) and the shardings."""

    graphdef: object
    optimizer: object
    abstract: dict      # ShapeDtypeStructs with .sharding
    shardings: dict


def text_ids(config) -> tuple[int, int, int]:
    """(rows of the token table, pad id, end id) of the text tower: model.text.vocab_size (0: the
    tokenizer's vocabulary size) and the tokenizer's special ids (`jaxclr.data.text.from_config`).
    A tower that pools at 'argmax' or 'last' with its rows given reads no special id, so no tokenizer
    is built then (-1, -1): a released model's shapes need no tokenizer files."""
    rows = int(config.model.text.vocab_size)
    if rows and text_tower.resolve_pool(config.model.text.pool, config.model.text.causal) in ("argmax", "last"):
        return rows, -1, -1
    tok = text.from_config(config.data)
    if rows and rows < tok.vocab_size:
        raise ValueError(f"model.text.vocab_size {rows} is below the tokenizer's {tok.vocab_size} ids; use 0 or >= "
                         f"{tok.vocab_size}")
    return rows or tok.vocab_size, tok.pad_id, tok.eos_id


def _model(config, seed):
    """The model of `config`; its token table has `text_ids(config)` rows."""
    vocab_size, pad_id, eos_id = text_ids(config)
    # config.model with model.image.stem_impl resolved: 'auto' picks the stem for GradCache
    # (train.micro_batches) on this backend. Plain dicts over the config's own nodes, so every key
    # the towers read is read from the config.
    stem_impl = vit.resolve_stem_impl(config.model.image.stem_impl, int(config.train.micro_batches))
    image = {key: config.model.image[key] for key in config.model.image}
    model_cfg = {**{key: config.model[key] for key in config.model}, "image": {**image, "stem_impl": stem_impl}}
    return TwoTower(model_cfg, config.data.image_size, vocab_size=vocab_size, pad_id=pad_id, eos_id=eos_id,
                    rngs=nnx.Rngs(seed))


def frozen_parts(config) -> dict:
    """{'freeze': model.freeze, 'learn_scale': model.learn_scale}: what `optim.trainable_mask` leaves out."""
    return {"freeze": config.model.freeze, "learn_scale": bool(config.model.learn_scale)}


def spec(config, mesh):
    """(StateSpec, init_fn): everything about the state except its values, and the function that
    makes the values."""
    optimizer = optim.make(config.optim, config.train.total_steps, **frozen_parts(config))
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: _model(config, 0)), nnx.Param)

    seed = int(config.seed)

    def init():
        _, params = nnx.split(_model(config, seed), nnx.Param)
        return {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32),
                "rng": jax.random.key_data(jax.random.key(seed)),
                # the non-finite guard's counters (jaxclr.trainer.step)
                "skipped": jnp.zeros((), jnp.int32), "skips_in_a_row": jnp.zeros((), jnp.int32),
                "max_skips_in_a_row": jnp.zeros((), jnp.int32)}

    shapes = jax.eval_shape(init)
    shardings = parallel.param_shardings(shapes, mesh)
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
    return StateSpec(graphdef, optimizer, abstract, shardings), init


def create(config, mesh) -> tuple[StateSpec, dict]:
    """Builds the model and optimiser and initialises the state directly in its shardings."""
    state_spec, init = spec(config, mesh)
    state = jax.jit(init, out_shardings=state_spec.shardings)()
    return state_spec, state


@dataclasses.dataclass(frozen=True)
class EmbedFns:
    """The two jitted embedding functions `(params, x) -> embeddings`, built once per run.

    Params are an argument (not a closed-over constant), so every eval of a run reuses the
    same compiled functions; `bind(params)` gives the host-side pair the evaluators call.
    """
    image: Callable
    text: Callable

    def bind(self, params) -> tuple[Callable, Callable]:
        """(embed_image, embed_text) at these params: numpy in, numpy out."""
        return (lambda x: np.asarray(self.image(params, x))), (lambda x: np.asarray(self.text(params, x)))


def embed_fns(graphdef, mesh) -> EmbedFns:
    """Jits the image and text towers of `graphdef` with replicated outputs (for the evaluators)."""
    out = parallel.replicated(mesh)
    return EmbedFns(image=jax.jit(lambda p, x: nnx.merge(graphdef, p).embed_image(x), out_shardings=out),
                    text=jax.jit(lambda p, x: nnx.merge(graphdef, p).embed_text(x), out_shardings=out))
