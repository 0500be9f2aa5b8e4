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

Non-finite guard: when the loss, any gradient or the updated params / optimiser state are not
all finite, the step keeps the old params and optimiser state (one `jax.lax.cond` between the
old and the new trees whole, so nothing non-finite is ever written, not even in part) and counts
the step as skipped in the state (`skipped`, `skips_in_a_row`, `max_skips_in_a_row`). The step counter
still advances: the skipped step's batch is consumed and its step number (which seeds the step's
RNG) is used up, so data order and RNG stay tied to the step. The optimiser's own count does not
advance (its state is kept whole), so the lr schedule and Adam's bias correction count applied
updates; the logged `lr` is the one applied, `schedule(step - skipped)`.

The host reads the flags only where it syncs anyway (log, checkpoint and eval steps) and
applies `train.on_nonfinite` (`jaxclr.trainer.nonfinite`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxclr import parallel
from jaxclr.losses import objective
from jaxclr.trainer import optim
from jaxclr.trainer import state as state_lib


def all_finite(tree) -> jax.Array:
    """Scalar bool: every floating-point leaf of ``tree`` is finite (integer leaves always are)."""
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return functools.reduce(jnp.logical_and, flags, jnp.bool_(True))


def split_micro(x, k):
    """[B, ...] -> [k, B/k, ...] taking every k-th row, so each micro-batch stays spread
    over all devices exactly like the global batch."""
    return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)


def merge_micro(x):
    """Inverse of split_micro."""
    return jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])


def stop_frozen(params, trainable):
    """`params` with `jax.lax.stop_gradient` on the leaves where the mask `trainable` is False
    (None: every leaf trainable)."""
    if trainable is None:
        return params
    return jax.tree.map(lambda on, p: p if on else jax.lax.stop_gradient(p), trainable, params)


def loss_and_grads(graphdef, params, batch, rng, loss_cfg, micro_batches=1, mesh=None, unroll=1, trainable=None):
    """Returns (total, {term: value}, grads) of the objective over the global batch.

    `trainable` (a bool mask like `params`, from `optim.trainable_mask`; None: all) stops the
    gradient at the frozen leaves: their gradients are exactly zero and XLA skips the backward
    pass of a frozen tower.

    micro_batches = k > 1: GradCache (module docstring). Its two loops over the micro-batches
    (embed without gradients; recompute each micro-batch's forward and back-propagate its
    cached embedding gradient) are `lax.scan`s unrolled by `unroll` (train.micro_unroll;
    0 or >= k: straight-line code). Unrolled, each micro-batch's forward sits behind an
    optimisation barrier with the previous one's output, and each recomputation behind one
    with its embedding gradients and the gradient sum so far: XLA cannot merge the
    recomputation with the first pass (CSE would keep every micro-batch's activations) and
    the micro-batches stay in order. Measured on XLA:CPU (`jaxclr.bench.micro_batches`),
    unrolling by u still needs about u micro-batches' activations at once: unrolling trades
    memory for speed there.
    """

    def objective_of(p, zimg, ztxt):
        model = nnx.merge(graphdef, stop_frozen(p, trainable))
        return objective.evaluate(loss_cfg, zimg, ztxt, model.scale(), model.bias(), rng, mesh)

    if micro_batches == 1:
        def full(p):
            zimg, ztxt = nnx.merge(graphdef, stop_frozen(p, trainable))(batch["image"], batch["text"])
            return objective_of(p, zimg, ztxt)

        (total, terms), grads = jax.value_and_grad(full, has_aux=True)(params)
        return total, terms, grads

    k = micro_batches
    n = batch["image"].shape[0]
    if n % k:
        raise ValueError(f"train.micro_batches={k} must divide the global batch {n}")
    unroll = k if unroll <= 0 or unroll >= k else int(unroll)
    chunks = {name: split_micro(v, k) for name, v in batch.items()}

    def embed(p, chunk):
        return nnx.merge(graphdef, stop_frozen(p, trainable))(chunk["image"], chunk["text"])

    def forward(previous, chunk):   # the barrier orders the micro-batches: one at a time
        _, chunk = jax.lax.optimization_barrier((previous, chunk))
        z = embed(params, chunk)
        return z, z

    first = jax.eval_shape(embed, params, jax.tree.map(lambda v: v[0], chunks))
    _, (zimg, ztxt) = jax.lax.scan(forward, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first), chunks,
                                   unroll=unroll)
    zimg, ztxt = merge_micro(zimg), merge_micro(ztxt)
    (total, terms), (grads, g_img, g_txt) = jax.value_and_grad(objective_of, argnums=(0, 1, 2), has_aux=True)(
        params, zimg, ztxt)

    def backprop(acc, xs):
        acc, p, chunk, cot = jax.lax.optimization_barrier((acc, params, *xs))
        _, vjp = jax.vjp(lambda q: embed(q, chunk), p)
        return jax.tree.map(jnp.add, acc, vjp(cot)[0]), None

    cotangents = (split_micro(g_img, k), split_micro(g_txt, k))
    tower_grads, _ = jax.lax.scan(backprop, jax.tree.map(jnp.zeros_like, params), (chunks, cotangents),
                                  unroll=unroll)
    return total, terms, jax.tree.map(jnp.add, grads, tower_grads)


def make_train_step(config, spec, mesh):
    """jit-compiled (state, batch) -> (state, metrics), state donated, shardings explicit.

    Metrics: loss, loss/<term>, scale, bias, grad_norm, lr; the guard's ``nonfinite`` (1.0 when
    this step's update was skipped), ``nonfinite/<what>`` for what was not finite (loss,
    loss/<term>, grads, update = the new params or optimiser state), and the counters
    ``train/skipped_steps``, ``train/skips_in_a_row``, ``train/max_skips_in_a_row``.
    """
    lr = optim.schedule(config.optim, config.train.total_steps)
    micro = int(config.train.micro_batches)
    unroll = int(config.train.micro_unroll)
    frozen = state_lib.frozen_parts(config)
    trainable = None if frozen == {"freeze": "", "learn_scale": True} else optim.trainable_mask(
        spec.abstract["params"], **frozen)

    def train_step(state, batch):
        params, opt_state = state["params"], state["opt_state"]
        rng = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        total, terms, grads = loss_and_grads(spec.graphdef, params, batch, rng, config.loss, micro, mesh, unroll,
                                             trainable)
        updates, new_opt_state = spec.optimizer.update(grads, opt_state, params)
        new_params = optim.project(optax.apply_updates(params, updates), config.model.max_scale)

        # Non-finite guard (module docstring): keep the old params and optimiser state unless
        # everything that went into and came out of the update is finite.
        bad = {"loss": ~jnp.isfinite(total), **{f"loss/{k}": ~jnp.isfinite(v) for k, v in terms.items()},
               "grads": ~all_finite(grads), "update": ~all_finite((new_params, new_opt_state))}
        ok = ~functools.reduce(jnp.logical_or, bad.values())
        # A cond, not a select per leaf: XLA:CPU copied the scalar chain that computes `ok` into
        # every leaf's select fusion (24,000 scalar ops in the tiny step), which made its compiles
        # 1.3-3.3x longer. XLA:CPU's memory is the same, XLA:TPU's temp 0.5% more
        # (docs/performance.md, "Compile time").
        params, opt_state = jax.lax.cond(ok, lambda: (new_params, new_opt_state), lambda: (params, opt_state))
        skip = (~ok).astype(jnp.int32)
        in_a_row = jnp.where(ok, 0, state["skips_in_a_row"] + 1)
        counters = {"skipped": state["skipped"] + skip, "skips_in_a_row": in_a_row,
                    "max_skips_in_a_row": jnp.maximum(state["max_skips_in_a_row"], in_a_row)}

        model = nnx.merge(spec.graphdef, params)
        metrics = {"loss": total, **{f"loss/{k}": v for k, v in terms.items()},
                   "scale": model.scale(), "bias": model.bias(), "grad_norm": optax.tree.norm(grads),
                   "lr": lr(state["step"] - state["skipped"]),   # the optimiser counts applied updates only
                   "nonfinite": skip.astype(jnp.float32),
                   **{f"nonfinite/{k}": v.astype(jnp.float32) for k, v in bad.items()},
                   "train/skipped_steps": counters["skipped"], "train/skips_in_a_row": in_a_row,
                   "train/max_skips_in_a_row": counters["max_skips_in_a_row"]}
        new_state = {**state, "params": params, "opt_state": opt_state, "step": state["step"] + 1, **counters}
        return new_state, metrics

    batch_sh = {"image": parallel.batch_sharding(mesh), "text": parallel.batch_sharding(mesh)}
    return jax.jit(train_step, in_shardings=(spec.shardings, batch_sh),
                   out_shardings=(spec.shardings, parallel.replicated(mesh)), donate_argnums=0)
