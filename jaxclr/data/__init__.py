"""jaxclr.data: the datasets a run reads and how batches reach the step.

    datasets.py     name -> TFDS builder (embedded ones built on first use), zero-shot tasks
    shapes.py       jaxclr_shapes: rendered coloured shapes with captions (the default)
    digits.py       jaxclr_digits: scikit-learn's handwritten digits with captions
    augment.py      horizontal flip that swaps 'left'/'right' in the caption
    resize.py       images to the model's square input: crop_bilinear (default), clip, squash
    pipeline.py     train_batches (the global order of a run, read through grain per process)
    eval_stream.py  eval splits read as a stream of batches (bounded host memory)
    text/           tokenizers (byte-level, SentencePiece) and `python -m jaxclr.data.train_tokenizer`
    prepare/        `python -m jaxclr.data.prepare`: your images -> a TFDS array_record dataset

May import the foundations (paths, parallel, config); never models, losses, evals or the trainer.
"""
