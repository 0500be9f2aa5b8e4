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

from jaxclr import optim, parallel
from jaxclr.data import tokenizer
from jaxclr.models import TwoTower


@dataclasses.dataclass(frozen=True)
class Setup:
    graphdef: object
    optimizer: object
    abstract: dict      # ShapeDtypeStructs with .sharding
    shardings: dict


def _model(config, seed):
    """The model of `config`; its token table has the rows of the data's tokenizer (`tokenizer.from_config`)."""
    vocab_size = tokenizer.from_config(config.data).vocab_size
    return TwoTower(config.model, config.data.image_size, vocab_size=vocab_size, rngs=nnx.Rngs(seed),
                    micro_batches=int(config.train.get("micro_batches", 1)))


def frozen_parts(config) -> dict:
    """{'freeze': model.freeze, 'learn_scale': model.learn_scale}: what `optim.trainable_mask` leaves out
    (defaults for a run directory's config.json written before these keys existed)."""
    return {"freeze": config.model.get("freeze", ""), "learn_scale": bool(config.model.get("learn_scale", True))}


def setup(config, mesh):
    """(Setup, init_fn): everything about the state except its values."""
    optimizer = optim.make(config.optim, config.train.total_steps, **frozen_parts(config))
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: _model(config, 0)), nnx.Param)

    seed = int(config.seed)

    def init():
        _, params = nnx.split(_model(config, seed), nnx.Param)
        return {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32),
                "rng": jax.random.key_data(jax.random.key(seed)),
                # the non-finite guard's counters (jaxclr.step)
                "skipped": jnp.zeros((), jnp.int32), "skips_in_a_row": jnp.zeros((), jnp.int32),
                "max_skips_in_a_row": jnp.zeros((), jnp.int32)}

    shapes = jax.eval_shape(init)
    shardings = parallel.param_shardings(shapes, mesh)
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
    return Setup(graphdef, optimizer, abstract, shardings), init


def create(config, mesh) -> tuple[Setup, dict]:
    """Builds the model and optimiser and initialises the state directly in its shardings."""
    setup_, init = setup(config, mesh)
    state = jax.jit(init, out_shardings=setup_.shardings)()
    return setup_, state


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
