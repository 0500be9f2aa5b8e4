"""CLIP (softmax InfoNCE) dual encoder; presets by arg: tiny (CPU default), digits, study, s16, b16, l14,
the released architectures openai_b32, openai_b16, openai_l14, b16_224 (SigLIP's), and tiny_hf.

digits: the tiny model on real handwritten digits (scikit-learn's, embedded as jaxclr_digits):
1,500 steps, zero-shot with the captions' own templates (figures: docs/data.md, "Data
benchmarks").

study: the model of experiments/, sized to run in minutes on 2 CPU cores: digits at 32 px, a
3-conv stem to a 4 x 4 grid, 2 blocks of width 64 per tower, 64-d embeddings, batch 128 x 500
steps (~50 epochs of the 1,294 train digits), evals on the test split incl. a linear probe.
Figures: docs/data.md ("Data benchmarks") and each study's experiments/*/README.md.

    python -m jaxclr.train --config=configs/clip.py:tiny --workdir=runs/tiny
    python -m jaxclr.train --config=configs/clip.py:b16 --config.train.batch_size=32768 ...

openai_b32 / openai_b16 / openai_l14: OpenAI's CLIP ViT-B/32, B/16, L/14 (ln_pre, no patch bias,
quick-GELU, LayerNorm eps 1e-5, pooling at the end token, OpenAI's pixel mean/std, CLIP's BPE
with 77 tokens); b16_224: SigLIP B/16 at 224 px (attention-pooling head, text pooled at the last
position, SigLIP's SentencePiece, 64 tokens). Both start from imported weights
(`python -m jaxclr.import_weights`, docs/pretrained.md; set data.tokenizer_model).
tiny_hf: the tiny model in a shape Hugging Face's CLIPModel expresses (no stem, no patch bias,
ln_pre, causal text pooled at CLIP BPE's end token), so `python -m jaxclr.export` hands it on.

Every other objective config starts from this one and changes `loss` (and the
logit parameters) only, so an ablation differs from the baseline by exactly the
keys it sets.
"""
import math

import ml_collections

from jaxclr.config.choices import DEFAULT_BLOCK, LOSS_TERMS

# name: (image: patch, width, depth, heads; text: width, depth, heads; embed_dim)
TINY = dict(patch=16, width=128, depth=3, heads=4, twidth=128, tdepth=3, theads=4, embed=128)
PRESETS = {
    "tiny": TINY,
    "digits": TINY,   # the tiny model on the digits
    "study": dict(patch=8, width=64, depth=2, heads=2, twidth=64, tdepth=2, theads=2, embed=64),
    "s16": dict(patch=16, width=384, depth=12, heads=6, twidth=384, tdepth=12, theads=6, embed=384),
    "b16": dict(patch=16, width=768, depth=12, heads=12, twidth=512, tdepth=12, theads=8, embed=512),
    "l14": dict(patch=14, width=1024, depth=24, heads=16, twidth=768, tdepth=12, theads=12, embed=768),
    "openai_b32": dict(patch=32, width=768, depth=12, heads=12, twidth=512, tdepth=12, theads=8, embed=512),
    "openai_b16": dict(patch=16, width=768, depth=12, heads=12, twidth=512, tdepth=12, theads=8, embed=512),
    "openai_l14": dict(patch=14, width=1024, depth=24, heads=16, twidth=768, tdepth=12, theads=12, embed=768),
    "b16_224": dict(patch=16, width=768, depth=12, heads=12, twidth=768, tdepth=12, theads=12, embed=768),
    "tiny_hf": TINY,
}
RELEASED = ("openai_b32", "openai_b16", "openai_l14", "b16_224", "tiny_hf")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)   # OpenAI CLIP's pixel mean and std (RGB, [0, 1] scale)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def released(c, arg):
    """Sets the architecture keys of the released models' presets (module docstring) on config `c`."""
    image, text = c.model.image, c.model.text
    if arg.startswith("openai_") or arg == "tiny_hf":
        image.update(pool="tok", ln_pre=True, patch_bias=False, act="quick_gelu", ln_eps=1e-5, stem=())
        text.update(causal=True, act="quick_gelu", ln_eps=1e-5, patch_size=1)
        c.data.tokenizer = "clip_bpe"   # set data.tokenizer_model to the model's tokenizer files
        c.data.lowercase = True         # CLIP's BPE lower-cases
        if arg.startswith("openai_"):
            image.update(pixel_mean=OPENAI_MEAN, pixel_std=OPENAI_STD)
            text.update(pool="argmax", vocab_size=49_408)
            c.data.max_len = 77
            c.data.eval_resize = "clip"
        else:
            text.pool = "eos"
    elif arg == "b16_224":
        image.update(pool="map", proj="none", stem=())
        text.update(causal=False, pool="last", proj="affine", patch_size=1, vocab_size=32_000)
        c.data.tokenizer = "siglip"
        c.data.max_len = 64
        c.data.eval_resize = "squash"

def get_config(arg="tiny"):
    if arg not in PRESETS:
        raise ValueError(f"unknown preset {arg!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[arg]
    tiny = arg in ("tiny", "digits", "study", "tiny_hf")   # CPU-sized
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1   # -1: every device not used by the other axes
    c.mesh.fsdp = 1    # params (and the batch) sharded over this axis
    c.mesh.model = 1   # params sharded over this axis; the batch is replicated on it

    c.data = ml_collections.ConfigDict()
    c.data.name = "jaxclr_shapes"
    c.data.data_dir = ""            # '' -> $JAXCLR_DATA_DIR or ~/.cache/jaxclr/tensorflow_datasets
    c.data.image_size = 64 if tiny else 224
    c.data.num_train = 50_000       # jaxclr_shapes generates this many; the last tenth is its 'validation' split
    c.data.num_test = 2_000
    c.data.build_seed = 0
    # Tokens incl. BOS/EOS (the longest shapes caption is 73 bytes). One value shared with
    # model.text.max_len: overriding either one changes both.
    c.data.max_len = ml_collections.FieldReference(80)
    # 'bytes' (UTF-8 byte + 3, 259 ids), 'words' (one id per word: configs/default.py) or 'sentencepiece'
    # (python -m jaxclr.data.train_tokenizer); the text tower's vocabulary is the tokenizer's (jaxclr.data.text).
    c.data.tokenizer = "bytes"
    # sentencepiece .model ('' -> <data dir>/<data.name>/tokenizer/sentencepiece.model); words: a file of
    # one word per line ('' -> the embedded dataset's own vocabulary)
    c.data.tokenizer_model = ""
    c.data.lowercase = False        # lower-case captions and prompts (after NFKC + whitespace collapse)
    c.data.train_split = "train"
    c.data.eval_split = "test"      # embedded datasets: 'validation' (carved from train) to tune, 'test' to report
    c.data.flip = True              # only datasets whose captions are flip-aware flip (jaxclr_shapes)
    c.data.worker_count = 0         # grain processes decoding ahead (0: threads of the trainer)
    c.data.prefetch = 8             # batches read ahead of the train step (0: each batch read when asked for)
    c.data.eval_examples = 2_000
    # Eval images to data.image_size (jaxclr/data/resize.py): 'crop_bilinear' (centre square, bilinear),
    # 'clip' (shorter side bicubic + centre crop: CLIPImageProcessor) or 'squash' (bicubic: SiglipImageProcessor)
    c.data.eval_resize = "crop_bilinear"
    # Feature names of a dataset read by name (python -m jaxclr.data.prepare writes these):
    c.data.image_feature = "image"
    c.data.caption_feature = "caption"  # Text, or a Sequence of Text (training draws one per example)
    c.data.label_feature = "label"      # ClassLabel: the zero-shot task (named after it)

    c.model = ml_collections.ConfigDict()
    c.model.embed_dim = p["embed"]
    c.model.dtype = "float32" if tiny else "bfloat16"
    c.model.image = ml_collections.ConfigDict(dict(
        patch_size=p["patch"], width=p["width"], depth=p["depth"], heads=p["heads"], mlp_ratio=4,
        pool="mean" if tiny else "tok",
        stem=(16, 32, 64) if arg == "study" else (16, 32, 64, 128) if tiny else (),
        stem_impl="auto",    # 'conv' | 'matmul' (the same function) | 'auto': matmul for GradCache on CPU
        # Released models' options (docs/pretrained.md); these defaults are every earlier run's function:
        ln_pre=False,                      # LayerNorm after the position embedding (OpenAI's CLIP)
        patch_bias=True,                   # bias of the patch embedding (none in CLIP)
        act="gelu_tanh",                   # 'gelu_tanh' | 'gelu_exact' | 'quick_gelu' (the blocks' MLP)
        ln_eps=1e-6,                       # LayerNorm epsilon
        pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.5, 0.5, 0.5),   # per channel, pixels scaled to [0, 1]
        proj="linear"))                    # 'linear' | 'affine' (with bias) | 'none' (width = embed_dim)
    c.model.text = ml_collections.ConfigDict(dict(
        max_len=c.data.get_ref("max_len"), width=p["twidth"], depth=p["tdepth"], heads=p["theads"],
        mlp_ratio=4, causal=not tiny,  # tiny: bidirectional, mean-pooled (experiments/tiny_recipe)
        patch_size=4 if tiny else 1,
        pool="auto",    # 'auto' (eos if causal, else mean) | 'eos' | 'argmax' (largest id: OpenAI) | 'mean' | 'last'
        act="gelu_tanh", ln_eps=1e-6, proj="linear",
        vocab_size=0))  # rows of the token table; 0: the tokenizer's vocabulary size
    c.model.init_scale = 1 / 0.07   # log-scale 2.659260
    c.model.max_scale = 100.0
    c.model.learn_bias = False
    c.model.init_bias = -10.0
    c.model.learn_scale = True      # False: the logit scale (and bias) stay at init_scale (init_bias), no update
    c.model.freeze = ""             # 'image' or 'text': that tower and its projection get no update (LiT); '' none
    # Memory at scale (both towers; never change the function, see jaxclr.models.layers):
    # s16/b16/l14 default to block remat + scan (memory estimates: docs/performance.md,
    # "Train-step memory"); tiny needs neither.
    c.model.remat = "none" if tiny else "block"   # 'block': recompute each transformer block in the backward pass
    c.model.scan_layers = not tiny  # True: stacked block params (leading layer axis), applied with nnx.scan
    # 'xla' (einsum + softmax, today's numbers) or 'dot_product' (jax.nn.dot_product_attention: cuDNN's fused
    # kernel on a GPU in bf16); the same function (jaxclr.models.layers)
    c.model.attention = "xla"

    c.loss = ml_collections.ConfigDict()
    c.loss.terms = ml_collections.ConfigDict({name: 0.0 for name in LOSS_TERMS})   # a term is on with a weight > 0
    c.loss.terms.clip = 1.0
    c.loss.impl = "streamed"        # 'streamed' (ring + blocks) or 'gather' (all-gather reference)
    c.loss.block_size = DEFAULT_BLOCK   # rows per block of the streamed engine
    c.loss.precision = "highest"    # every loss matmul: 'highest' (full float32), 'high' or 'default' (backend's)
    c.loss.mix_beta = 0.5           # lam ~ Beta(mix_beta, mix_beta) for m2mix / vmix / lmix
    c.loss.mix_per_pair = False     # one lam per step (False) or one per pair (True)
    c.loss.mix_scale = 0.0          # m2mix scale s' for the mixed logits; 0 -> the learned scale
    c.loss.uniformity_t = 2.0
    c.loss.alignment_alpha = 2.0

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-3 if tiny else 5e-4
    c.optim.warmup_steps = 100 if tiny else 2_000
    c.optim.weight_decay = 0.1 if tiny else 0.2
    c.optim.b1 = 0.9
    c.optim.b2 = 0.98
    c.optim.eps = 1e-6
    c.optim.grad_clip = 1.0
    c.optim.min_lr_ratio = 0.0      # cosine decays to lr * min_lr_ratio

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 64 if tiny else 32_768    # global batch
    c.train.total_steps = 4_000 if tiny else 50_000
    c.train.micro_batches = 1       # >1: exact GradCache over tower micro-batches
    c.train.micro_unroll = 1        # GradCache loops unrolled by u (0: fully): faster, more memory (docs/)
    c.train.log_every = 50 if tiny else 100
    c.train.stop_at = 0             # end this run after this step (0: run to total_steps); rerun resumes
    c.train.on_nonfinite = "stop"   # non-finite loss/grads: update skipped; 'stop' (raise) or 'skip' (count, go on)
    c.train.max_skips = 10          # 'skip': stop after this many skipped steps in a row
    c.train.malloc_mmap_threshold_kib = 0    # glibc: 0 keeps its dynamic mmap threshold; K > 0 fixes it at K KiB
    c.train.profile_steps = ()      # (start, stop): jax.profiler trace of those steps in <workdir>/profile
    c.train.allow_config_change = False  # True: resume even though the config differs from the run's config.json
    c.train.init_from = ""          # fine-tune from the params of RUN, RUN/checkpoints or RUN/checkpoints/<step>

    c.log = ml_collections.ConfigDict()
    c.log.wandb = False             # also log to Weights & Biases (extra [wandb]; WANDB_MODE=offline works)
    c.log.wandb_project = "jaxclr"

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 1_000 if tiny else 2_000
    c.checkpoint.keep = 3

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 2_000 if tiny else 5_000
    c.eval.batch_size = 256
    c.eval.evaluators = ("zeroshot", "retrieval", "geometry")
    c.eval.recall_ks = (1, 5, 10)
    c.eval.geometry_max_points = 8192
    # Linear probe (add "linear_probe" to eval.evaluators): logistic regression with C = probe_c on the
    # image embeddings of the first probe_examples train examples; metrics probe/<task>_top1.
    c.eval.probe_examples = 1000
    c.eval.probe_c = 1.0
    # Extra zero-shot tasks: TFDS datasets prepared in the data dir, 'name[:split]', e.g.
    # ("cifar10", "imagenet2012:validation"); metrics zeroshot/<name>_top1 (jaxclr.evals.tasks).
    c.eval.zeroshot_datasets = ()
    c.eval.retrieval_datasets = ()  # Recall@K on whole TFDS splits 'name[:split]', e.g. ("coco_captions:test",)
    if arg == "digits":
        # 1,294 train / 144 validation / 359 test images; a mirrored digit is no digit: no flip
        c.data.name = "jaxclr_digits"
        c.data.flip = False
        c.train.total_steps = 1_500
        c.eval.every = 500
    if arg == "study":
        c.data.name = "jaxclr_digits"
        c.data.flip = False
        c.data.image_size = 32
        c.train.batch_size = 128
        c.train.total_steps = 500
        c.optim.lr = 2e-3
        c.optim.warmup_steps = 50
        c.train.log_every = 50
        c.eval.every = 500
        c.checkpoint.every = 500
        c.eval.evaluators = ("zeroshot", "retrieval", "geometry", "linear_probe")
    if arg in RELEASED:
        released(c, arg)
    assert math.isclose(math.log(c.model.init_scale), 2.659260, abs_tol=1e-6)
    return c
