"""Hugging Face transformers' ``CLIPModel`` / ``SiglipModel`` state dicts <-> jaxclr params (pure numpy).

Both directions come from one table of name pairs (``_pairs``): importing reads each Hugging Face
tensor into a jaxclr path, exporting writes it back, so an export followed by an import is the
identity. The reference for both is transformers itself (tests/models/test_pretrained_hf.py runs
its torch models), never this table's own inverse.

Names (transformers 5.x; ``E = embeddings``, ``L = encoder.layers.<i>``):

    CLIP   vision_model.E.{class_embedding, patch_embedding.weight [W,3,p,p] (no bias),
           position_embedding.weight}, vision_model.pre_layrnorm, vision_model.L.{layer_norm1,
           self_attn.{q,k,v,out}_proj, layer_norm2, mlp.fc1, mlp.fc2}, vision_model.post_layernorm,
           visual_projection.weight [D,W]; text_model.E.{token_embedding, position_embedding},
           text_model.L..., text_model.final_layer_norm, text_projection.weight; logit_scale
    SigLIP the same towers without class token, pre-LN and projections; a patch bias; the image
           tower's ``vision_model.head`` (probe, attention.in_proj_{weight,bias} [3W,W], out_proj,
           layernorm, mlp) is jaxclr's MAP head; ``text_model.head`` [D,W] + bias is the text
           projection; logit_scale [1] and logit_bias [1].

Torch Linear weights are [out, in]: jaxclr kernels are their transpose. Text pooling follows
transformers: CLIP pools at the first ``eos_token_id`` of its text config, or at the largest id
when that id is 2 (older configs), SigLIP at the last position.
"""
from __future__ import annotations

import numpy as np

from jaxclr.models.convert import CheckpointError, TensorReader, mlp_ratio

HF_ACT = {"quick_gelu": "quick_gelu", "gelu": "gelu_exact", "gelu_pytorch_tanh": "gelu_tanh",
          "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh"}   # hidden_act -> model.*.act
JAX_ACT = {"quick_gelu": "quick_gelu", "gelu_exact": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}


def _block(hf: str, jx: str) -> list[tuple]:
    """(hf name(s), jaxclr path, kind) of one transformer layer; kinds: '' copy, 'T' transpose,
    'qkv' three transposed [W,W] weights -> [W,3W], 'qkv_b' three biases -> [3W]."""
    out = [((f"{hf}.self_attn.q_proj.weight", f"{hf}.self_attn.k_proj.weight", f"{hf}.self_attn.v_proj.weight"),
            f"{jx}/attn/qkv/kernel", "qkv"),
           ((f"{hf}.self_attn.q_proj.bias", f"{hf}.self_attn.k_proj.bias", f"{hf}.self_attn.v_proj.bias"),
            f"{jx}/attn/qkv/bias", "qkv_b"),
           (f"{hf}.self_attn.out_proj.weight", f"{jx}/attn/out/kernel", "T"),
           (f"{hf}.self_attn.out_proj.bias", f"{jx}/attn/out/bias", "")]
    out += _ln(f"{hf}.layer_norm1", f"{jx}/ln1") + _ln(f"{hf}.layer_norm2", f"{jx}/ln2")
    out += _mlp(f"{hf}.mlp", f"{jx}/mlp")
    return out


def _ln(hf: str, jx: str) -> list[tuple]:
    return [(f"{hf}.weight", f"{jx}/scale", ""), (f"{hf}.bias", f"{jx}/bias", "")]


def _mlp(hf: str, jx: str) -> list[tuple]:
    return [(f"{hf}.fc1.weight", f"{jx}/fc1/kernel", "T"), (f"{hf}.fc1.bias", f"{jx}/fc1/bias", ""),
            (f"{hf}.fc2.weight", f"{jx}/fc2/kernel", "T"), (f"{hf}.fc2.bias", f"{jx}/fc2/bias", "")]


def _pairs(kind: str, vision_depth: int, text_depth: int) -> list[tuple]:
    """Every (hf name(s), jaxclr path, how) of a ``kind`` ('clip' | 'siglip') model."""
    e = "vision_model.embeddings"
    out = [(f"{e}.patch_embedding.weight", "image/patch/kernel", "patch"),
           (f"{e}.position_embedding.weight", "image/pos_embedding", "pos")]
    for i in range(vision_depth):
        out += _block(f"vision_model.encoder.layers.{i}", f"image/encoder/blocks/{i}")
    out += _ln("vision_model.post_layernorm", "image/encoder/norm")
    t = "text_model"
    out += [(f"{t}.embeddings.token_embedding.weight", "text/token/embedding", ""),
            (f"{t}.embeddings.position_embedding.weight", "text/pos_embedding", "pos")]
    for i in range(text_depth):
        out += _block(f"{t}.encoder.layers.{i}", f"text/encoder/blocks/{i}")
    out += _ln(f"{t}.final_layer_norm", "text/encoder/norm")
    out.append(("logit_scale", "logit/log_scale", "scalar"))
    if kind == "clip":
        out += [(f"{e}.class_embedding", "image/cls_embedding", "cls"),
                ("visual_projection.weight", "image_proj/kernel", "T"),
                ("text_projection.weight", "text_proj/kernel", "T")]
        out += _ln("vision_model.pre_layrnorm", "image/ln_pre")
    else:
        h = "vision_model.head"
        out += [(f"{e}.patch_embedding.bias", "image/patch/bias", ""),
                (f"{h}.probe", "image/map_head/probe", ""),
                (f"{h}.attention.in_proj_weight", "image/map_head/q/kernel", "q"),
                (f"{h}.attention.in_proj_weight", "image/map_head/kv/kernel", "kv"),
                (f"{h}.attention.in_proj_bias", "image/map_head/q/bias", "q_b"),
                (f"{h}.attention.in_proj_bias", "image/map_head/kv/bias", "kv_b"),
                (f"{h}.attention.out_proj.weight", "image/map_head/out/kernel", "T"),
                (f"{h}.attention.out_proj.bias", "image/map_head/out/bias", "")]
        out += _ln(f"{h}.layernorm", "image/map_head/norm") + _mlp(f"{h}.mlp", "image/map_head/mlp")
        out += [(f"{t}.head.weight", "text_proj/kernel", "T"), (f"{t}.head.bias", "text_proj/bias", ""),
                ("logit_bias", "logit/bias", "scalar")]
    return out


def _count(names, prefix: str) -> int:
    layers = {int(n[len(prefix):].split(".")[0]) for n in names if n.startswith(prefix)}
    return max(layers) + 1 if layers else 0


def kind_of(hf_config: dict) -> str:
    """'clip' or 'siglip' from a config.json's model_type; CheckpointError for others."""
    model_type = hf_config.get("model_type", "")
    if model_type in ("clip", "siglip"):
        return model_type
    raise CheckpointError(f"hf: config.json model_type {model_type!r} is not 'clip' or 'siglip' (CLIPModel or "
                          "SiglipModel); other models are not supported")


def convert(tensors: dict, hf_config: dict) -> tuple[dict, dict]:
    """A CLIPModel / SiglipModel state dict and its config.json -> (jaxclr unscanned params, config overrides)."""
    kind = kind_of(hf_config)
    layout = f"hf_{kind}"
    reader = TensorReader(tensors, layout)
    vc, tc = hf_config.get("vision_config") or {}, hf_config.get("text_config") or {}
    w, tw = int(vc["hidden_size"]), int(tc["hidden_size"])
    vdepth = _count(reader.names(), "vision_model.encoder.layers.")
    tdepth = _count(reader.names(), "text_model.encoder.layers.")
    p, size = int(vc["patch_size"]), int(vc["image_size"])
    grid = (size // p) ** 2
    vocab, length = int(tc["vocab_size"]), int(tc["max_position_embeddings"])
    vh, th = int(vc["intermediate_size"]), int(tc["intermediate_size"])
    embed = int(hf_config.get("projection_dim") or tc.get("projection_size") or tw) if kind == "clip" else \
        int(tc.get("projection_size") or tw)
    shapes = {"image/patch/kernel": (w, 3, p, p), "image/pos_embedding": (grid + (kind == "clip"), w),
              "text/pos_embedding": (length, tw), "text/token/embedding": (vocab, tw),
              "image/cls_embedding": (w,), "image_proj/kernel": (embed, w), "text_proj/kernel": (embed, tw),
              "text_proj/bias": (embed,), "image/map_head/probe": (1, 1, w), "logit/log_scale": None,
              "logit/bias": None, "image/patch/bias": (w,), "image/map_head/q/kernel": (3 * w, w),
              "image/map_head/kv/kernel": (3 * w, w), "image/map_head/q/bias": (3 * w,),
              "image/map_head/kv/bias": (3 * w,)}
    params = {}
    for hf, jx, how in _pairs(kind, vdepth, tdepth):
        tower_w = w if jx.startswith("image") else tw
        hidden = vh if jx.startswith("image") else th
        if how in ("qkv", "qkv_b"):
            parts = [reader.take(n, (tower_w, tower_w) if how == "qkv" else (tower_w,)) for n in hf]
            params[jx] = np.concatenate([x.T for x in parts], 1) if how == "qkv" else np.concatenate(parts)
            continue
        if how == "scalar":
            found = reader.shape(hf) if hf in reader else None
            x = reader.take(hf, found if found in ((), (1,)) else ())
            params[jx] = np.asarray(x, np.float32).reshape(())
            continue
        shape = shapes.get(jx) or _generic_shape(jx, tower_w, hidden)
        x = reader.take(hf, shape)
        if how == "patch":
            x = x.transpose(2, 3, 1, 0).reshape(p * p * 3, w)
        elif how in ("pos", "cls"):
            x = x.reshape(1, -1, x.shape[-1])
        elif how == "T":
            x = x.T
        elif how in ("q", "q_b"):
            x = x[:w].T if how == "q" else x[:w]
        elif how in ("kv", "kv_b"):
            x = x[w:].T if how == "kv" else x[w:]
        params[jx] = np.ascontiguousarray(x, np.float32)
    for extra in ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"):
        reader.take_meta(extra)   # buffers some versions save
    reader.finish()
    act = {t: HF_ACT.get(c.get("hidden_act", "")) for t, c in (("image", vc), ("text", tc))}
    for tower, value in act.items():
        if value is None:
            found = (vc if tower == "image" else tc).get("hidden_act")
            raise CheckpointError(f"{layout}: config.json {tower} hidden_act {found!r} is not one of {sorted(HF_ACT)}")
    over = {"model.image.patch_size": p, "model.image.width": w, "model.image.depth": vdepth,
            "model.image.heads": int(vc["num_attention_heads"]), "model.image.mlp_ratio": mlp_ratio(vh, w),
            "model.image.act": act["image"], "model.image.ln_eps": float(vc.get("layer_norm_eps", 1e-5)),
            "model.image.stem": (), "model.text.width": tw, "model.text.depth": tdepth,
            "model.text.heads": int(tc["num_attention_heads"]), "model.text.mlp_ratio": mlp_ratio(th, tw),
            "model.text.act": act["text"], "model.text.ln_eps": float(tc.get("layer_norm_eps", 1e-5)),
            "model.text.patch_size": 1, "model.text.vocab_size": vocab, "data.max_len": length,
            "data.image_size": size, "model.embed_dim": embed}
    if kind == "clip":
        eos = int(tc.get("eos_token_id", 2))
        over.update({"model.image.pool": "tok", "model.image.ln_pre": True, "model.image.patch_bias": False,
                     "model.image.proj": "linear", "model.text.causal": True, "model.text.proj": "linear",
                     "model.text.pool": "argmax" if eos == 2 else "eos", "model.learn_bias": False})
    else:
        over.update({"model.image.pool": "map", "model.image.ln_pre": False, "model.image.patch_bias": True,
                     "model.image.proj": "none", "model.text.causal": False, "model.text.proj": "affine",
                     "model.text.pool": "last", "model.learn_bias": True,
                     "model.init_bias": float(params["logit/bias"])})
    scale = float(np.exp(params["logit/log_scale"]))
    over.update({"model.init_scale": scale, "model.max_scale": max(100.0, scale)})
    return params, over


def _generic_shape(jx: str, width: int, hidden: int) -> tuple:
    """The torch shape of a block, LayerNorm or MLP tensor at jaxclr path ``jx``."""
    if jx.endswith("/scale") or (jx.endswith("/bias") and "/fc1/" not in jx):
        return (width,)
    if "/fc1/" in jx:
        return (hidden, width) if jx.endswith("kernel") else (hidden,)
    if "/fc2/" in jx:
        return (width, hidden)
    return (width, width)


def export(params: dict, kind: str) -> dict:
    """jaxclr unscanned params -> the CLIPModel / SiglipModel state dict (numpy float32): the inverse of `convert`."""
    vdepth = _count([p.replace("/", ".") for p in params], "image.encoder.blocks.")
    tdepth = _count([p.replace("/", ".") for p in params], "text.encoder.blocks.")
    out = {}
    for hf, jx, how in _pairs(kind, vdepth, tdepth):
        if jx not in params:
            raise CheckpointError(f"export {kind}: the run has no param {jx!r}, which {kind} needs")
        x = np.asarray(params[jx], np.float32)
        if how in ("qkv", "qkv_b"):
            for name, part in zip(hf, np.split(x, 3, axis=-1)):
                out[name] = np.ascontiguousarray(part.T if how == "qkv" else part)
            continue
        if how == "patch":
            w = x.shape[1]
            p = int(round((x.shape[0] // 3) ** 0.5))
            x = x.reshape(p, p, 3, w).transpose(3, 2, 0, 1)
        elif how in ("pos", "cls"):
            x = x.reshape(-1, x.shape[-1]) if how == "pos" else x.reshape(-1)
        elif how == "T":
            x = x.T
        elif how == "scalar":
            x = x.reshape(() if kind == "clip" else (1,))
        elif how in ("q", "kv"):   # in_proj rows [q; k; v]: q comes first in _pairs, then kv appends
            x = x.T if how == "q" else np.concatenate([out[hf], x.T], 0)
        elif how == "kv_b":
            x = np.concatenate([out[hf], x])
        out[hf] = np.array(x, np.float32, order="C")   # (ascontiguousarray would make a scalar 1-d)
    return out
