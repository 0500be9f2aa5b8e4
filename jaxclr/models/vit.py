"""Vision Transformer image tower: patches -> pre-LN transformer -> pooled [B, width] float32.

Optional convolutional stem (``model.image.stem = (c1, c2, ...)``): stride-2 3x3
convolutions with GELU before patchifying, as in "Early Convolutions Help
Transformers See Better" (Xiao et al., 2021). Tokens still cover
``patch_size`` input pixels; the stem gives them translation-equivariant local
features, which small ViTs trained briefly need to tell shapes apart.

``model.image.stem_impl`` picks how the stem convolutions run; both compute the same
function with the same params: ``'conv'`` (XLA convolutions) or ``'matmul'`` (each 3x3
stride-2 convolution as nine strided slices and one matmul, ``conv3x3_s2_matmul``). XLA:CPU
runs convolutions inside a loop body (GradCache's micro-batch ``lax.scan``) far slower than
matmuls (docs/performance.md, "GradCache cost"). ``'auto'`` (the presets' setting, ``resolve_stem_impl``)
takes 'matmul' where that was measured to pay, GradCache (``train.micro_batches > 1``) on
the CPU backend, and 'conv' everywhere else.

Released models (docs/pretrained.md): ``ln_pre`` (a LayerNorm after the position embedding,
OpenAI's CLIP), ``patch_bias`` (CLIP's patch embedding has none), ``pool='map'`` (SigLIP's
attention-pooling head, ``layers.MAPHead``), per-channel ``pixel_mean``/``pixel_std``, and the
blocks' ``act``/``ln_eps``. Their defaults are the function every run before them had.
"""
from __future__ import annotations

import einops
import jax
import jax.numpy as jnp
from flax import nnx

from jaxclr.models.layers import PARAM_DTYPE, Encoder, MAPHead, compute_dtype, layer_norm

POOLS = ("tok", "mean", "map")
STEM_IMPLS = ("auto", "conv", "matmul")
PIXEL_MEAN = 0.5  # per channel, after scaling pixels to [0, 1]
PIXEL_STD = 0.5


def conv3x3_s2_matmul(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """A 3x3 stride-2 'SAME' convolution as one matmul: x [B, H, W, C] (H, W even), kernel
    [3, 3, C, O], bias [O] -> [B, H/2, W/2, O], equal to ``nnx.Conv(C, O, (3, 3), strides=2,
    padding='SAME')``. For even sizes 'SAME' pads 0 before and 1 after each spatial axis."""
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"the matmul stem needs even spatial sizes, got {h} x {w}")
    xp = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    taps = [xp[:, dy:dy + h:2, dx:dx + w:2, :] for dy in range(3) for dx in range(3)]
    patches = jnp.concatenate(taps, axis=-1)                       # [B, H/2, W/2, 9C], (dy, dx, c) order
    return jnp.dot(patches, kernel.reshape(9 * c, -1)) + bias


def resolve_stem_impl(impl: str, micro_batches: int = 1, backend: str | None = None) -> str:
    """'conv' or 'matmul' for model.image.stem_impl `impl`: 'auto' is 'matmul' for GradCache
    (`micro_batches > 1`) on the CPU backend (`backend`, default `jax.default_backend()`) and
    'conv' otherwise; the other values are returned as they are."""
    if impl not in STEM_IMPLS:
        raise ValueError(f"model.image.stem_impl must be one of {STEM_IMPLS}, got {impl!r}")
    if impl != "auto":
        return impl
    backend = jax.default_backend() if backend is None else backend
    return "matmul" if micro_batches > 1 and backend == "cpu" else "conv"


def normalize_pixels(images: jax.Array, mean=(PIXEL_MEAN,) * 3, std=(PIXEL_STD,) * 3) -> jax.Array:
    """Maps pixel values on the 0..255 scale (uint8 or float) to float32 (x / 255 - mean) / std,
    per channel (one mean and std for every channel: the same scalar arithmetic as before)."""
    x = images.astype(jnp.float32) / 255.0
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(set(mean)) == 1 and len(set(std)) == 1:
        return (x - mean[0]) / std[0]
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


class ViT(nnx.Module):
    """Vision Transformer.

    Args:
      cfg_image: mapping with patch_size, width, depth, heads, mlp_ratio, pool ('tok' | 'mean' | 'map'),
        stem (conv channels; each conv halves the resolution), stem_impl, ln_pre, patch_bias, act,
        ln_eps, pixel_mean, pixel_std (module docstring).
      image_size: side S of the square input images [B, S, S, 3].
      dtype: compute dtype (name or dtype); parameters are float32.
      rngs: nnx.Rngs with a 'params' stream.
      remat, scan_layers, attention: memory options and the attention kernel of the encoder
        (model.remat, model.scan_layers, model.attention; see jaxclr.models.layers); they never
        change the function.

    Params: 'patch' (Linear on flattened patches), 'pos_embedding' [1, T, width],
    'cls_embedding' [1, 1, width] (only for 'tok' pooling), 'ln_pre' (only with ln_pre),
    'encoder' (blocks + final norm), 'map_head' (only for 'map' pooling).
    """

    def __init__(self, cfg_image, image_size: int, dtype="float32", *, rngs: nnx.Rngs, remat: str = "none",
                 scan_layers: bool = False, attention: str = "xla"):
        patch, width, pool = int(cfg_image["patch_size"]), int(cfg_image["width"]), cfg_image["pool"]
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not divisible by model.image.patch_size {patch}")
        if pool not in POOLS:
            raise ValueError(f"model.image.pool must be one of {POOLS}, got {pool!r}")
        self.dtype = compute_dtype(dtype)
        self.patch_size, self.image_size, self.width, self.pool = patch, image_size, width, pool
        self.num_patches = (image_size // patch) ** 2
        channels = (3, *(int(c) for c in cfg_image["stem"]))
        self.reduce = 2 ** (len(channels) - 1)  # resolution lost in the stem
        if patch % self.reduce:
            raise ValueError(f"patch_size {patch} must be divisible by 2**len(model.image.stem) = {self.reduce}")
        # 'auto' is resolved where the train state is built (it depends on train.micro_batches)
        self.stem_impl = resolve_stem_impl(cfg_image["stem_impl"])
        self.stem = nnx.List([nnx.Conv(cin, cout, (3, 3), strides=2, padding="SAME", dtype=self.dtype,
                                       param_dtype=PARAM_DTYPE, rngs=rngs)
                              for cin, cout in zip(channels[:-1], channels[1:])])
        p = patch // self.reduce
        self.pixel_mean, self.pixel_std = tuple(cfg_image["pixel_mean"]), tuple(cfg_image["pixel_std"])
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3 or min(self.pixel_std) <= 0:
            raise ValueError("model.image.pixel_mean and pixel_std must be 3 numbers each (RGB), std > 0; got "
                             f"{self.pixel_mean}, {self.pixel_std}")
        self.patch = nnx.Linear(p * p * channels[-1], width, use_bias=bool(cfg_image["patch_bias"]),
                                dtype=self.dtype, param_dtype=PARAM_DTYPE, rngs=rngs)
        tokens = self.num_patches + (1 if pool == "tok" else 0)
        init = nnx.initializers.normal(stddev=0.02)
        self.pos_embedding = nnx.Param(init(rngs.params(), (1, tokens, width), PARAM_DTYPE))
        if pool == "tok":
            self.cls_embedding = nnx.Param(jnp.zeros((1, 1, width), PARAM_DTYPE))
        act, eps = cfg_image["act"], float(cfg_image["ln_eps"])
        if cfg_image["ln_pre"]:
            self.ln_pre = layer_norm(width, self.dtype, rngs, eps)
        self.encoder = Encoder(width, int(cfg_image["depth"]), int(cfg_image["heads"]),
                               int(cfg_image["mlp_ratio"]), dtype=self.dtype, rngs=rngs, remat=remat,
                               scan_layers=scan_layers, attention=attention, act=act, ln_eps=eps)
        if pool == "map":
            self.map_head = MAPHead(width, int(cfg_image["heads"]), int(cfg_image["mlp_ratio"]), dtype=self.dtype,
                                    rngs=rngs, act=act, ln_eps=eps)

    def __call__(self, images: jax.Array) -> jax.Array:
        """images [B, S, S, 3] (uint8 or float on the 0..255 scale) -> features [B, width] float32."""
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"expected images [B, {self.image_size}, {self.image_size}, 3], got {images.shape}")
        x = normalize_pixels(images, self.pixel_mean, self.pixel_std).astype(self.dtype)
        for conv in self.stem:
            if self.stem_impl == "matmul":
                y = conv3x3_s2_matmul(x, conv.kernel[...].astype(self.dtype), conv.bias[...].astype(self.dtype))
            else:
                y = conv(x)
            x = jax.nn.gelu(y)
        p = self.patch_size // self.reduce
        x = einops.rearrange(x, "b (h p) (w q) c -> b (h w) (p q c)", p=p, q=p)
        x = self.patch(x.astype(self.dtype))
        if self.pool == "tok":
            cls = jnp.broadcast_to(self.cls_embedding[...], (x.shape[0], 1, self.width))
            x = jnp.concatenate([cls.astype(x.dtype), x], axis=1)
        x = (x + self.pos_embedding[...]).astype(self.dtype)
        if hasattr(self, "ln_pre"):
            x = self.ln_pre(x)
        x = self.encoder(x)
        if self.pool == "map":
            return self.map_head(x).astype(jnp.float32)
        pooled = x[:, 0] if self.pool == "tok" else jnp.mean(x.astype(jnp.float32), axis=1)
        return pooled.astype(jnp.float32)
