"""flax.nnx towers for contrastive image-text pretraining.

Public API:
  TwoTower(cfg_model, image_size, *, vocab_size, pad_id, eos_id, rngs)
                                             the dual encoder (embed_image, embed_text, scale, bias)
  ViT(cfg_image, image_size, dtype, *, rngs) image tower
  TextTransformer(cfg_text, dtype, *, vocab_size, pad_id, eos_id, rngs)  text tower
  count_params(model)                        number of scalar parameters

  convert/                                   released checkpoint layouts (OpenAI/open_clip, big_vision,
                                             Hugging Face) <-> jaxclr's param tree, in numpy

Imports nothing of jaxclr outside this folder (a bottom layer beside losses).
"""
from jaxclr.models.layers import Block, Encoder, compute_dtype
from jaxclr.models.text import TextTransformer
from jaxclr.models.two_tower import TwoTower, count_params, l2_normalize
from jaxclr.models.vit import ViT

__all__ = ["Block", "Encoder", "TextTransformer", "TwoTower", "ViT", "compute_dtype", "count_params",
           "l2_normalize"]
