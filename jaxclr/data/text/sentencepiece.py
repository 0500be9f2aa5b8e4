"""SentencePiece caption tokenizers: jaxclr's own (data.tokenizer = 'sentencepiece') and a released
SigLIP model's (data.tokenizer = 'siglip', `SiglipTokenizer`, at the end).

A model is trained from a dataset's captions by `python -m jaxclr.data.train_tokenizer`
(`train_model` here) with the special ids of jaxclr's own tokenizers:

    pad 0 ('<pad>'), bos 1 ('<s>'), eos 2 ('</s>'), unk 3 ('<unk>'); pieces from 4 on.

PAD/BOS/EOS are those of the byte tokenizer, so the text tower (which masks PAD 0 and pools
at EOS 2) needs nothing per tokenizer. A character the model has not seen encodes to unk
(no byte fallback). SentencePiece's own normaliser is off ('identity'): the text is cleaned
by `tokenizer.clean` (NFKC, whitespace collapsed, optional lower-case) before training and
before every encode, so training and use see the same text. A model whose special ids differ
(e.g. one trained elsewhere) is refused with a line saying how to train a compatible one.

SigLIP (`SiglipTokenizer`): a released model (big_vision's c4_en / mc4 vocabulary, HF's spiece.model)
keeps its own piece ids, with no remapping: no BOS; the model's EOS appended and "sticky" (a caption
too long is cut so that EOS is the last id); padded with EOS (big_vision's tokenize(eos='sticky',
pad_value=1), 1 being </s> in the c4 model; HF's SiglipTokenizer pads with '</s>' too). vocab_size is
the model's piece count (32,000 for c4_en). The text is cleaned by `tokenizer.clean` (data.lowercase
applies: big_vision and HF lower-case SigLIP's text, so set it) and then by the model's own
normaliser. HF's SiglipTokenizer and open_clip also delete ASCII punctuation, which this does not
(big_vision's tokenize op keeps it).

The loaded model is cached per path in each process (a file replaced at the same path is not
reloaded). A tokenizer pickles as its path and lowercase flag, and grain worker processes
reload the model from the path.
"""
from __future__ import annotations

import functools
import io
import os

import numpy as np
import sentencepiece as spm

from jaxclr import paths
from jaxclr.data import datasets
from jaxclr.data.text.tokenizer import BOS, EOS, PAD, Tokenizer, TokenizerError

UNK = 3
SPECIAL_IDS = {'pad': PAD, 'bos': BOS, 'eos': EOS, 'unk': UNK}
DEFAULT_FILE = 'sentencepiece.model'


def default_model_path(data_cfg) -> str:
    """<data dir>/<data.name without ':version'>/tokenizer/sentencepiece.model."""
    name = str(data_cfg.name).split(':')[0]
    return os.fspath(paths.resolve(datasets.resolve_data_dir(data_cfg)) / name / 'tokenizer' / DEFAULT_FILE)


def _train_hint(path: str) -> str:
    return (f'train one with `python -m jaxclr.data.train_tokenizer --config=<this config> --vocab_size=8000'
            f'{"" if path.endswith(DEFAULT_FILE) else f" --output={path}"}`, or set data.tokenizer_model to an '
            'existing .model file')


def released_hint() -> str:
    """What to set data.tokenizer_model to for data.tokenizer='siglip'."""
    return ('set data.tokenizer_model to the SentencePiece model of a released SigLIP (e.g. spiece.model of a '
            'transformers SigLIP, or big_vision\'s c4_en sentencepiece.model)')


@functools.lru_cache(maxsize=8)
def _processor(path: str, released: bool = False) -> spm.SentencePieceProcessor:
    """The model at `path` (local or URL), loaded once per process; TokenizerError if unusable.

    released=False: a jaxclr model, whose special ids must be SPECIAL_IDS; True: any model with an EOS.
    """
    hint = released_hint() if released else _train_hint(path)
    if not path:
        raise TokenizerError('data.tokenizer_model', f'is empty; {hint}')
    file = paths.resolve(path)
    if not file.exists():
        raise TokenizerError('data.tokenizer_model', f'no SentencePiece model at {path}; {hint}')
    try:
        processor = spm.SentencePieceProcessor(model_proto=file.read_bytes())
    except Exception as e:  # noqa: BLE001 - sentencepiece raises RuntimeError/OSError on a bad file
        raise TokenizerError('data.tokenizer_model', f'{path} is not a SentencePiece model '
                             f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}); '
                             f'{hint}') from None
    if released:
        if processor.eos_id() < 0:
            raise TokenizerError('data.tokenizer_model', f'{path} has no EOS piece (eos id -1); {hint}')
        return processor
    got = {'pad': processor.pad_id(), 'bos': processor.bos_id(), 'eos': processor.eos_id(),
           'unk': processor.unk_id()}
    if got != SPECIAL_IDS:
        have = ', '.join(f'{k} {v}' for k, v in got.items())
        need = ', '.join(f'{k} {v}' for k, v in SPECIAL_IDS.items())
        raise TokenizerError('data.tokenizer_model', f'{path} has special ids {have}; jaxclr needs {need} (the '
                             f'text tower masks PAD and pools at EOS); {_train_hint(path)}')
    return processor


class SentencePieceTokenizer(Tokenizer):
    """Pieces of a SentencePiece model; vocab_size is the model's piece count."""

    released = False   # whether the model is a released one, with its own special ids (SiglipTokenizer)

    def __init__(self, path: str, lowercase: bool = False):
        super().__init__(lowercase)
        self.path = os.fspath(path)
        self._sp = _processor(self.path, self.released)
        self.vocab_size = int(self._sp.get_piece_size())

    def ids(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.encode(text, out_type=int), np.int32).reshape(-1)

    def decode_ids(self, ids: np.ndarray) -> str:
        """Unknown pieces decode to ' \u2047 ' (SentencePiece's unk surface)."""
        return self._sp.decode(np.asarray(ids).astype(int).tolist())

    def __getstate__(self) -> dict:
        return {'path': self.path, 'lowercase': self.lowercase}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state['path'], state['lowercase'])

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.path!r}, lowercase={self.lowercase})'


class SiglipTokenizer(SentencePieceTokenizer):
    """A released SigLIP SentencePiece model: its own ids, no BOS, EOS appended (kept last when
    cutting), padded with EOS; vocab_size is its piece count (module docstring).

    Args:
      path: the model file (local or URL).
      lowercase: data.lowercase; SigLIP's text was lower-cased, so True to match it.
    """

    released = True

    def __init__(self, path: str, lowercase: bool = False):
        super().__init__(path, lowercase)
        self.bos_id = None
        self.eos_id = self.pad_id = int(self._sp.eos_id())


def train_model(texts, vocab_size: int, *, model_type: str = 'bpe',
                character_coverage: float = 0.9995, num_threads: int = 0) -> bytes:
    """A serialised SentencePiece model of the (already cleaned) `texts` with the ids above.

    vocab_size is an upper bound (hard_vocab_limit=False): a small caption set gives a
    smaller model rather than an error. model_type 'bpe' (CLIP's choice) by default: on a
    small, repetitive caption set 'unigram' stops at a few dozen mostly single-letter pieces
    (measured: 29 pieces for 24 distinct captions at vocab 64, where BPE learns every word).
    num_threads 0: every CPU.
    """
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=int(vocab_size),
        model_type=model_type, character_coverage=float(character_coverage), hard_vocab_limit=False,
        pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK, byte_fallback=False,
        normalization_rule_name='identity', num_threads=int(num_threads) or (os.cpu_count() or 1),
        minloglevel=2)
    return model.getvalue()
