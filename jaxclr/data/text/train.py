"""Trains a SentencePiece tokenizer on the captions of a config's dataset (train split).

    python -m jaxclr.data.train_tokenizer --config=configs/clip.py:tiny --vocab_size=8000
    python -m jaxclr.data.train_tokenizer --config=configs/clip.py:b16 --config.data.name=coco_captions \
        --vocab_size=32000 --output=gs://bucket/tok/coco32k.model

The captions are the records' captions as training reads them (caption/text feature, or
the class prompt of a labelled dataset), cleaned as the tokenizer cleans them (NFKC,
whitespace, data.lowercase). An embedded dataset (jaxclr_shapes) is built on first use.
The model goes to --output, else to the default path that data.tokenizer='sentencepiece'
with data.tokenizer_model='' reads (<data dir>/<dataset>/tokenizer/sentencepiece.model);
an existing file there is replaced. Special ids: see jaxclr.data.text.sentencepiece.
To use it: --config.data.tokenizer=sentencepiece [--config.data.tokenizer_model=<output>].
"""
from __future__ import annotations

import sys
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from jaxclr import config as configlib
from jaxclr import paths
from jaxclr.data import datasets, pipeline
from jaxclr.data.text import sentencepiece as sp
from jaxclr.data.text import tokenizer

DEFAULT_CONFIG = 'configs/clip.py:tiny'
MODEL_TYPES = ('bpe', 'unigram')



def read_captions(data_cfg, max_captions: int = 0, seed: int = 0) -> list[str]:
    """Cleaned captions of the train split; with max_captions > 0, those of a random subset
    of that many records (seeded). Unreadable records are skipped (and counted as in training)."""
    source = pipeline.SafeSource(datasets.data_source(data_cfg, data_cfg.train_split),
                                 pipeline.standardizer(data_cfg, with_labels=False))
    indices = np.arange(len(source))
    if 0 < max_captions < len(indices):
        indices = np.sort(np.random.default_rng(seed).choice(indices, max_captions, replace=False))
    lowercase = bool(data_cfg.lowercase)
    records = (source[int(i)] for i in indices)
    return [tokenizer.clean(r['caption'], lowercase) for r in records if r is not None]


def train(data_cfg, vocab_size: int, output: str = '', *, max_captions: int = 0, model_type: str = 'bpe',
          character_coverage: float = 0.9995) -> str:
    """Trains on the captions of `data_cfg`'s dataset and writes the model; returns its path."""
    if vocab_size < 8:
        raise ValueError(f'--vocab_size: {vocab_size} is too small; use e.g. 8000 (4 ids are special)')
    if model_type not in MODEL_TYPES:
        raise ValueError(f'--model_type: {model_type!r} is not one of {", ".join(MODEL_TYPES)}')
    captions = read_captions(data_cfg, max_captions)
    if not captions:
        raise ValueError(f'no readable captions in {data_cfg.name}:{data_cfg.train_split}')
    model = sp.train_model(captions, vocab_size, model_type=model_type, character_coverage=character_coverage)
    path = paths.resolve(output or sp.default_model_path(data_cfg))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model)
    sp._processor.cache_clear()   # this process may have loaded an older model from the same path
    return str(path)


def define_flags():
    config_flags.DEFINE_config_file('config', DEFAULT_CONFIG, 'Config file (path:preset): its data.* is read.')
    flags.DEFINE_integer('vocab_size', 8000, 'Upper bound on the pieces (incl. 4 special ids); a small caption '
                         'set gives fewer.')
    flags.DEFINE_string('output', '', 'Where to write the .model (local or URL); default: beside the dataset.')
    flags.DEFINE_integer('max_captions', 0, 'Train on a random subset of this many records (0: all).')
    flags.DEFINE_string('model_type', 'bpe', f'SentencePiece model type: {" or ".join(MODEL_TYPES)}.')
    flags.DEFINE_float('character_coverage', 0.9995, 'Share of characters the vocabulary covers (rarer ones: unk).')


def main(argv):
    del argv
    f = flags.FLAGS
    start = time.time()
    try:
        path = train(f.config.data, f.vocab_size, f.output, max_captions=f.max_captions, model_type=f.model_type,
                     character_coverage=f.character_coverage)
    except (ValueError, FileNotFoundError) as e:
        configlib.exit_with_errors([str(e)])
    tok = sp.SentencePieceTokenizer(path)
    print(f'wrote {path}: {tok.vocab_size} pieces ({time.time() - start:.1f} s)')
    print('use it with --config.data.tokenizer=sentencepiece'
          + ('' if path == sp.default_model_path(f.config.data) else f' --config.data.tokenizer_model={path}'))


def cli() -> None:
    """The `python -m` command line."""
    configlib.check_overrides(sys.argv, default=DEFAULT_CONFIG)
    define_flags()
    app.run(main)


if __name__ == "__main__":
    cli()
