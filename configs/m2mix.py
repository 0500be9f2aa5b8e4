"""CLIP + geodesic multimodal mixup (m2-mix) negatives.

Arg: '<preset>' or '<preset>,<variant>' with variant in m2mix (default), vmix,
lmix, m3mix (all three uni/multi-modal terms). The paper's runs used lam ~
Beta(0.5, 0.5), fixed s = 100 for CLIP and s' = 1/0.07 for the mixed logits, and
a weight w in {0.001 ... 0.05} in fine-tuning; the weight here is 0.1 for training
from scratch at tiny scale (override loss.terms.m2mix).

Fine-tuning a released model (Oh et al. fine-tune OpenAI's ViT-B/32 on Flickr30k and COCO):
'openai_b32_ft' (also openai_b16_ft, openai_l14_ft) is that architecture with m2-mix at weight 0.01,
lr 1e-5, batch 256, training on TFDS coco_captions (nested captions) and evaluating COCO 5k retrieval.
Set train.init_from to the run `python -m jaxclr.import_weights` wrote and data.tokenizer_model to its
tokenizer/ (docs/pretrained.md has the commands).
"""
from jaxclr.config.load import sibling

VARIANTS = {"m2mix": ("m2mix",), "vmix": ("vmix",), "lmix": ("lmix",), "m3mix": ("m2mix", "vmix", "lmix")}


def get_config(arg="tiny"):
    preset, _, variant = arg.partition(",")
    variant = variant or "m2mix"
    if variant not in VARIANTS:
        raise ValueError(f"unknown m2mix variant {variant!r}; choose one of {sorted(VARIANTS)}")
    finetune = preset.endswith("_ft")
    if finetune and not preset.startswith("openai_"):
        raise ValueError(f"unknown fine-tuning preset {preset!r}; use openai_b32_ft, openai_b16_ft or "
                         "openai_l14_ft")
    c = sibling(__file__, "clip").get_config(preset.removesuffix("_ft") if finetune else preset)
    for term in VARIANTS[variant]:
        c.loss.terms[term] = 0.01 if finetune else 0.1
    c.loss.mix_beta = 0.5
    c.loss.mix_scale = 1 / 0.07
    if finetune:
        c.optim.update(lr=1e-5, warmup_steps=500, weight_decay=0.2)
        c.train.update(batch_size=256, total_steps=5_000)
        c.checkpoint.every = 1_000
        c.data.update(name="coco_captions", caption_feature="captions", train_split="train", eval_split="test")
        c.eval.update(every=1_000, evaluators=("retrieval", "geometry"), retrieval_datasets=("coco_captions:test",))
    return c
