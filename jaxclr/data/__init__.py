"""jaxclr.data: embedded TFDS datasets, tokenizers, augmentation, grain pipeline.

    datasets.py   name -> TFDS builder (embedded ones built on first use), zero-shot tasks
    shapes.py     jaxclr_shapes: rendered coloured shapes with captions (the default)
    digits.py     jaxclr_digits: scikit-learn's handwritten digits with captions
    tokenizer.py  tokenizers by config: byte-level (PAD 0, BOS 1, EOS 2, byte b -> b + 3) or SentencePiece
    sentencepiece_tokenizer.py  SentencePiece models with those ids (+ unk 3); train_tokenizer.py its CLI
    augment.py    horizontal flip that swaps 'left'/'right' in the caption
    pipeline.py   train_batches (the global order of a run, read through grain per process)
    eval_stream.py  eval splits read as a stream of batches (bounded host memory)
    prepare.py    `python -m jaxclr.data.prepare`: your images (manifest, img2dataset tars, class
                  folders) -> a TFDS array_record dataset read by name (+ prepare_sources/_images/_writer)
"""
from jaxclr.data import tokenizer
from jaxclr.data.datasets import (
    EMBEDDED,
    data_source,
    ensure_prepared,
    get_builder,
    resolve_data_dir,
    zero_shot_tasks,
)
from jaxclr.data.pipeline import bad_record_count, bad_record_stats, train_batches

__all__ = [
    'EMBEDDED', 'bad_record_count', 'bad_record_stats', 'data_source', 'ensure_prepared',
    'get_builder', 'resolve_data_dir', 'tokenizer', 'train_batches', 'zero_shot_tasks',
]
