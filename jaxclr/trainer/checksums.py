"""Checksums of a train state that prove what a checkpoint restore read.

`state_checksums(state)` gives every array leaf a 64-bit checksum of its bits, computed on the
devices by one jitted reduction over the *global* array:

    h(x) = n + sum_i  w_i * u_i   (mod 2^32),   w_i = 2 (i m mod 2^32) + 1,

twice, with two odd multipliers m, where u_i is the bit pattern of element i (row-major order
of the global array; 64-bit elements count as two 32-bit words) and n the number of words.
Integer addition mod 2^32 is associative and commutative, so the value does not depend on how
the array is sharded or over how many processes: a checkpoint saved on one topology verifies
on another. Any change of one element changes h (the weights
are odd, so w_i * delta is never 0 mod 2^32 for a nonzero delta below 2^32), and two elements
swapped change it (the weights differ); two independent weight sets make an accidental match
of other damage a 2^-64 event.

The result is replicated, so every process holds every checksum and compares the same numbers.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Two odd multipliers (Knuth's and a second large odd constant) for the two 32-bit halves.
_MULTIPLIERS = (np.uint32(2654435761), np.uint32(2246822519))


def _words(x: jax.Array) -> jax.Array:
    """The bit patterns of `x` as a flat uint32 vector (8/16-bit elements widened, 64-bit ones split in two)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32).reshape(-1)
    size = x.dtype.itemsize
    if size == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[size]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).reshape(-1)


def _leaf_checksum(x: jax.Array) -> jax.Array:
    """uint32 [2]: h(x) for the two multipliers (module docstring)."""
    u = _words(x)
    i = jnp.arange(u.shape[0], dtype=jnp.uint32)
    n = jnp.uint32(u.shape[0])
    return jnp.stack([n + jnp.sum(u * ((i * m) * jnp.uint32(2) + jnp.uint32(1)), dtype=jnp.uint32)
                      for m in _MULTIPLIERS])


@jax.jit
def _checksums(leaves):
    return jnp.stack([_leaf_checksum(x) for x in leaves])   # [leaves, 2]: one transfer to the host


def state_checksums(state) -> dict[str, str]:
    """{leaf path: 16 hex digits} for every array leaf of `state` (jax or numpy arrays)."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    names = [jax.tree_util.keystr(path, simple=True, separator="/") for path, _ in flat]
    values = _checksums([jnp.asarray(leaf) for _, leaf in flat])
    local = np.asarray(values.addressable_data(0))   # replicated: this process's copy
    return {name: f"{int(v[0]):08x}{int(v[1]):08x}" for name, v in zip(names, local)}


def first_mismatch(saved: dict[str, str], restored: dict[str, str]) -> str | None:
    """The first leaf (in saved order) whose checksum differs or is missing; None when all match."""
    for name, value in saved.items():
        if restored.get(name) != value:
            return name
    return None
