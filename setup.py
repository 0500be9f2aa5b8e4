"""jaxclr: large-batch multimodal contrastive pretraining in JAX/Flax."""
from setuptools import find_packages, setup

# jax 0.11+ (and flax 0.12.9+) need Python >= 3.12: pip gives Python 3.11 jax 0.10.2 and Python 3.12+
# jax 0.12 with these bounds (both tested, docs/performance.md "Versions"). The accelerator extras use the
# same bounds as the jax pin below (a test checks).
JAX_BOUNDS = ">=0.10.2,<0.13"

setup(
    name="jaxclr",
    version="0.1.0",
    description="Sharded dual-encoder contrastive pretraining (CLIP, SigLIP, DCL, m2-mix) in JAX/Flax",
    python_requires=">=3.11",
    packages=find_packages(include=["jaxclr", "jaxclr.*"]),
    install_requires=[
        "jax>=0.10.2,<0.13",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "tensorflow-datasets>=4.9.10,<5",
        "array-record>=0.5",
        "grain>=0.2.18,<0.3",
        "ml-collections>=1.1,<2",
        "einops>=0.8,<0.9",
        "tensorboardX>=2.6,<3",
        "matplotlib>=3.8",
        "scikit-learn>=1.3",
        "scipy>=1.11",   # jaxclr.study: Spearman rho of the studies' correlation claims
        "numpy>=1.26",
        "sentencepiece>=0.2",
        "tokenizers>=0.20,<1",   # released CLIP tokenizers (data.tokenizer='clip_bpe')
        "safetensors>=0.4,<1",   # released checkpoints in and out (jaxclr.pretrained), read with numpy
    ],
    extras_require={
        # One extra per job; `make train` installs none but the accelerator's, `make test` adds [test].
        "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "wandb>=0.19"],   # the W&B sink is tested offline
        "wandb": ["wandb>=0.19"],   # log.wandb=True
        # The references the pretrained-model tests compare against (transformers' torch CLIPModel /
        # SiglipModel / CLIPTokenizerFast); `make test` installs it. torch 2.13.0 is pinned because pip
        # takes its CPU wheel (192 MB) on the project's machines; elsewhere install a CPU torch first.
        "interop": ["torch==2.13.0", "transformers>=5,<6"],
        # Accelerators: `make ACCEL=tpu|cuda12 train` installs '.[<ACCEL>]'. Both wheels are on PyPI
        # (libtpu and jax-cuda12-plugin[with-cuda]); no -f/--find-links URL is needed for jax >= 0.4.3x.
        "tpu": [f"jax[tpu]{JAX_BOUNDS}"],
        "cuda12": [f"jax[cuda12]{JAX_BOUNDS}"],
        # `python -m jaxclr.data.prepare --runner=...` (Apache Beam); `make test` installs it, `make train`
        # does not. Beam 2.77 caps pillow, protobuf and pyarrow below their newest releases.
        "beam": ["apache-beam>=2.77,<3"],
        # gs:// workdirs and data dirs: etils.epath (orbax, tfds) reads them through fsspec + gcsfs.
        "gcs": ["gcsfs"],
    },
)
