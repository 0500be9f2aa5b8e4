"""The train step: loss (a weighted sum of terms), gradients, optimiser update, and the
projection of the logit log-scale onto its bound (``optim.project``).

With `train.micro_batches = k > 1` the step is exact GradCache: embeddings of
the whole global batch are computed in k tower micro-batches without
gradients, the contrastive loss and its gradient with respect to the
embeddings are taken on the full global batch, and each micro-batch is then
back-propagated with its slice of those cached embedding gradients. Loss and
gradients equal k = 1 up to float32 rounding. (Plain gradient accumulation is
NOT equivalent for contrastive losses: each micro-batch would see fewer
negatives.)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxclr import optim, parallel
from jaxclr.losses import objective


def split_micro(x, k):
    """[B, ...] -> [k, B/k, ...] taking every k-th row, so each micro-batch stays spread
    over all devices exactly like the global batch."""
    return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)


def merge_micro(x):
    """Inverse of split_micro."""
    return jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])


def loss_and_grads(graphdef, params, batch, rng, loss_cfg, micro_batches=1, mesh=None):
    """Returns (total, {term: value}, grads) of the objective over the global batch."""

    def objective_of(p, zimg, ztxt):
        model = nnx.merge(graphdef, p)
        return objective.evaluate(loss_cfg, zimg, ztxt, model.scale(), model.bias(), rng, mesh)

    if micro_batches == 1:
        def full(p):
            zimg, ztxt = nnx.merge(graphdef, p)(batch["image"], batch["text"])
            return objective_of(p, zimg, ztxt)

        (total, terms), grads = jax.value_and_grad(full, has_aux=True)(params)
        return total, terms, grads

    k = micro_batches
    n = batch["image"].shape[0]
    if n % k:
        raise ValueError(f"train.micro_batches={k} must divide the global batch {n}")
    chunks = {name: split_micro(v, k) for name, v in batch.items()}

    def embed(p, chunk):
        return nnx.merge(graphdef, p)(chunk["image"], chunk["text"])

    zimg, ztxt = jax.lax.map(lambda c: embed(params, c), chunks)
    zimg, ztxt = merge_micro(zimg), merge_micro(ztxt)
    (total, terms), (grads, g_img, g_txt) = jax.value_and_grad(objective_of, argnums=(0, 1, 2), has_aux=True)(
        params, zimg, ztxt)

    def backprop(acc, xs):
        chunk, cot = xs
        _, vjp = jax.vjp(lambda p: embed(p, chunk), params)
        return jax.tree.map(jnp.add, acc, vjp(cot)[0]), None

    cotangents = (split_micro(g_img, k), split_micro(g_txt, k))
    tower_grads, _ = jax.lax.scan(backprop, jax.tree.map(jnp.zeros_like, params), (chunks, cotangents))
    return total, terms, jax.tree.map(jnp.add, grads, tower_grads)


def make_train_step(config, setup, mesh):
    """jit-compiled (state, batch) -> (state, metrics), state donated, shardings explicit."""
    lr = optim.schedule(config.optim, config.train.total_steps)
    micro = int(config.train.micro_batches)

    def train_step(state, batch):
        params = state["params"]
        rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        total, terms, grads = loss_and_grads(setup.graphdef, params, batch, rng, config.loss, micro, mesh)
        updates, opt_state = setup.optimizer.update(grads, state["opt_state"], params)
        params = optim.project(optax.apply_updates(params, updates), config.model.max_scale)
        model = nnx.merge(setup.graphdef, params)
        metrics = {"loss": total, **{f"loss/{k}": v for k, v in terms.items()},
                   "scale": model.scale(), "bias": model.bias(),
                   "grad_norm": optax.global_norm(grads), "lr": lr(state["step"])}
        new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1, "rng": state["rng"]}
        return new_state, metrics

    batch_sh = {"image": parallel.batch_sharding(mesh), "text": parallel.batch_sharding(mesh)}
    return jax.jit(train_step, in_shardings=(setup.shardings, batch_sh),
                   out_shardings=(setup.shardings, parallel.replicated(mesh)), donate_argnums=0)
