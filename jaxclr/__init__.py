"""jaxclr: sharded dual-encoder contrastive pretraining (CLIP, SigLIP, DCL, m2-mix) in JAX/Flax.

Entry points: `python -m jaxclr.train`, `jaxclr.evaluate`, `jaxclr.sweep`, `jaxclr.aggregate`,
`jaxclr.study`, `jaxclr.data.prepare`, `jaxclr.data.train_tokenizer`, `jaxclr.bench.*`.
The folders and what each may import: docs/architecture.md. The top layer: may import anything.
"""
