"""Pure-numpy mappings from released checkpoint layouts to jaxclr's param tree and config keys.

Each layout module has ``convert(tensors: dict[str, np.ndarray], ...) -> (params, overrides)``:
``params`` maps jaxclr's '/'-joined *unscanned* param paths (image/patch/kernel,
image/encoder/blocks/0/attn/qkv/kernel, ..., logit/log_scale) to float32 arrays, and
``overrides`` maps dotted config keys (model.image.width, data.image_size, ...) to the values the
architecture needs. The converters do no file IO and import nothing but numpy: the readers
(safetensors, npz) are elsewhere.

Layouts: ``openai_clip`` (OpenAI's CLIP state dict, as open_clip's CLIP gives it),
``big_vision_siglip`` (big_vision's SigLIP .npz names), ``hf`` (Hugging Face transformers'
CLIPModel / SiglipModel).

A checkpoint that does not fit the layout -- a missing tensor, an unexpected one (left unconsumed)
or a wrong shape -- raises ``CheckpointError`` (a ``ValueError``) whose message is one line naming
the tensor, the shape found and the shape expected.
"""
import numpy as np

__all__ = ["CheckpointError", "TensorReader", "mlp_ratio"]


class CheckpointError(ValueError):
    """A checkpoint that does not fit its layout; the message is one line naming the tensor."""


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class TensorReader:
    """The tensors of one checkpoint, read by name with a shape check; ``finish`` rejects leftovers.

    ``take(name, shape)`` returns the tensor as float32 after checking its shape; ``anchor(name, ndim,
    described)`` only checks the rank (for the tensors whose shapes define the architecture's sizes).
    Every error is a ``CheckpointError`` of the one form
    ``<layout>: tensor '<name>': found <shape | nothing (missing)>, expected <shape | nothing (...)>``.
    """

    def __init__(self, tensors, layout: str):
        self._tensors = dict(tensors)
        self.layout = layout
        self.used = set()

    def __contains__(self, name) -> bool:
        return name in self._tensors

    def names(self):
        return list(self._tensors)

    def shape(self, name):
        return tuple(np.shape(self._tensors[name]))

    def error(self, name, found, expected) -> CheckpointError:
        return CheckpointError(f"{self.layout}: tensor {name!r}: found {found}, expected {expected}")

    def wrong(self, name, expected: str) -> CheckpointError:
        """The error for a present tensor whose shape is not ``expected`` (a description)."""
        return self.error(name, f"shape {_shape(self.shape(name))}", expected)

    def _get(self, name, expected: str):
        if name not in self._tensors:
            raise self.error(name, "nothing (missing)", expected)
        return self._tensors[name]

    def anchor(self, name, ndim: int, described: str) -> tuple:
        """The shape of ``name`` after checking its rank (``described``: e.g. '[width, 3, patch, patch]')."""
        value = self._get(name, f"shape {described}")
        shape = tuple(int(d) for d in np.shape(value))
        if len(shape) != ndim:
            raise self.error(name, f"shape {_shape(shape)}", f"shape {described}")
        return shape

    def take(self, name, shape, *, alt_shapes=()) -> np.ndarray:
        """``name`` as a float32 array of ``shape`` (or one of ``alt_shapes``, reshaped to ``shape``)."""
        shape = tuple(int(d) for d in shape)
        value = self._get(name, f"shape {_shape(shape)}")
        found = tuple(int(d) for d in np.shape(value))
        if found != shape and found not in [tuple(a) for a in alt_shapes]:
            raise self.error(name, f"shape {_shape(found)}", f"shape {_shape(shape)}")
        self.used.add(name)
        return np.asarray(value, np.float32).reshape(shape)

    def take_stacked(self, name, index: int, depth: int, shape) -> np.ndarray:
        """Entry ``index`` of a tensor stacked on a leading layer axis of ``depth`` (big_vision's scan)."""
        full = self.take(name, (depth,) + tuple(shape))
        return np.ascontiguousarray(full[index])

    def take_meta(self, name):
        """A non-tensor entry (e.g. OpenAI's 'context_length'), marked used; None when absent."""
        if name not in self._tensors:
            return None
        self.used.add(name)
        return self._tensors[name]

    def finish(self):
        """Raise for the first tensor (by name) that no mapping consumed."""
        left = sorted(set(self._tensors) - self.used)
        if left:
            more = f" ({len(left) - 1} more unexpected: {', '.join(left[1:4])}{', ...' if len(left) > 4 else ''})" \
                if len(left) > 1 else ""
            name = left[0]
            raise self.error(name, f"shape {_shape(np.shape(self._tensors[name]))}",
                             f"nothing (not part of the {self.layout} layout){more}")


def mlp_ratio(hidden: int, width: int):
    """MLP hidden size as jaxclr's mlp_ratio: an int when it divides (every CLIP/SigLIP but So400m),
    else the float ratio whose ``int(ratio * width)`` (jaxclr's rule) gives back ``hidden``
    (So400m: 4304 / 1152; config validation asks for an int today)."""
    if hidden % width == 0:
        return hidden // width
    ratio = hidden / width
    if int(ratio * width) != hidden:
        raise ValueError(f"MLP hidden size {hidden} of width {width} is no mlp_ratio jaxclr can express")
    return ratio
