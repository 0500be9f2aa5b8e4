"""Evaluation: zero-shot classification, retrieval Recall@k and representation geometry.

Modules (import what you need from them directly):

- ``prompts``: prompt templates per zero-shot task (``templates_for``).
- ``zeroshot``: chunked embedding of inputs, class embeddings from templates, top-1/top-5 accuracy.
- ``retrieval``: image<->text Recall@k with caption groups, computed in row chunks.
- ``geometry``: alignment, uniformity, modality gap and relative alignment.
- ``runner``: evaluators chosen by name from ``config.eval`` and ``run_evals`` for the train loop
  and the standalone ``jaxclr.evaluate`` entry point.

The definitions follow docs/reference.md ("Evaluation metrics" and "Geometry").

May import losses, logs (tables), data and the foundations; never the trainer.
"""
