"""The precision policy, read off the lowered train step with bfloat16 towers:

- tower matmuls run in bfloat16 at the backend's default precision (no global flag forces them up);
- the final projections are float32 at HIGHEST;
- every matmul of the loss, forward and custom-VJP / autodiff backward, in both engines, carries
  ``loss.precision``.
"""
import re

import jax
import jax.numpy as jnp
import pytest

from jaxclr import config as configlib
from jaxclr import parallel
from jaxclr.trainer import state as state_lib
from jaxclr.trainer import step as step_lib

EMBED, IMAGE_WIDTH, TEXT_WIDTH, BATCH = 24, 32, 48, 16
DOT = re.compile(r"stablehlo\.dot_general .*precision = \[(\w+), (\w+)\] : \((tensor<[^>]*>), (tensor<[^>]*>)\)")


def lowered_step(impl, precision):
    c = configlib.load("configs/clip.py:tiny")
    c.data.image_size = 32
    c.model.image.update(patch_size=16, width=IMAGE_WIDTH, depth=1, heads=2, stem=())
    c.model.text.update(width=TEXT_WIDTH, depth=1, heads=2, patch_size=1)
    c.model.update(embed_dim=EMBED, dtype="bfloat16")
    c.loss.update(impl=impl, precision=precision)
    c.train.batch_size = BATCH
    mesh = parallel.make_mesh(c.mesh)
    with jax.set_mesh(mesh):
        spec, _ = state_lib.spec(c, mesh)
        step = step_lib.make_train_step(c, spec, mesh)
        sh = parallel.batch_sharding(mesh)
        batch = {"image": jax.ShapeDtypeStruct((BATCH, 32, 32, 3), jnp.uint8, sharding=sh),
                 "text": jax.ShapeDtypeStruct((BATCH, c.data.max_len), jnp.int32, sharding=sh)}
        return step.lower(spec.abstract, batch).as_text()


def dots(hlo):
    """(precision, [(shape, dtype) of each operand]) for every dot_general."""
    out = []
    for lhs_p, rhs_p, *operands in DOT.findall(hlo):
        assert lhs_p == rhs_p
        parsed = []
        for t in operands:
            *dims, dtype = t[len("tensor<"):-1].split("x")
            parsed.append((tuple(int(d) for d in dims), dtype))
        out.append((lhs_p, parsed))
    return out


def classify(operands):
    dims = {d for shape, _ in operands for d in shape}
    dtypes = {dtype for _, dtype in operands}
    if "bf16" in dtypes:
        return "tower"
    if all(len(shape) == 2 for shape, _ in operands) and EMBED in dims:
        return "projection" if dims & {IMAGE_WIDTH, TEXT_WIDTH} else "loss"
    return "other"


@pytest.mark.parametrize("impl", ["streamed", "gather"])
@pytest.mark.parametrize("precision", ["highest", "default"])
def test_loss_precision_projections_float32_towers_untouched(impl, precision):
    by_kind = {}
    for prec, operands in dots(lowered_step(impl, precision)):
        by_kind.setdefault(classify(operands), []).append((prec, operands))
    # Forward + the two backward matmuls of the loss, both directions.
    assert len(by_kind["loss"]) >= 3, by_kind.get("loss")
    assert {p for p, _ in by_kind["loss"]} == {precision.upper()}
    assert all(dtype == "f32" for _, ops in by_kind["loss"] for _, dtype in ops)
    # Projections (forward and backward of both towers): float32 at HIGHEST whatever loss.precision is.
    assert len(by_kind["projection"]) >= 6
    assert all(p == "HIGHEST" and {d for _, d in ops} == {"f32"} for p, ops in by_kind["projection"])
    # The towers stay in bfloat16 at the default precision: no global precision flag.
    assert len(by_kind["tower"]) >= 10
    assert {p for p, _ in by_kind["tower"]} == {"DEFAULT"}


def test_unknown_precision_is_an_error():
    from jaxclr import losses
    u = jnp.ones((4, 3)) / 3 ** 0.5
    with pytest.raises(ValueError, match="unknown loss precision"):
        losses.clip_loss(u, u, 10.0, precision="float64")
