"""Prints the max |jaxclr - reference| of the image and text embeddings for every import format, scanned and
unscanned: the figures of docs/pretrained.md's table (the tests assert <= 2e-5; this prints the values).

    JAX_PLATFORMS=cpu .venv/bin/python -m tests.pretrained.max_differences
"""
import pathlib
import tempfile

import jax
import numpy as np

from jaxclr.pretrained import api, import_run, sources
from tests.pretrained import test_fixtures, test_hf


def model_of(imported, scan):
    config = import_run.config_for(imported, scan_layers=scan)
    import_run.check_tokenizer(imported, config)
    mesh = api._one_device(config)
    with jax.set_mesh(mesh):
        return api.Model(config, import_run.place(imported.params, config, mesh), mesh)


def main():
    rows = []
    imgs = test_hf.images()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        cases = []
        for pool, eos in (("eos", None), ("argmax", 2)):
            directory = tmp / f"clip_{pool}"
            tok = test_hf.transformers.CLIPTokenizerFast.from_pretrained(str(test_hf.TOKENIZER / "hf"))
            model, tok = test_hf.make_clip(directory, tok.eos_token_id if eos is None else eos)
            ids = tok(test_hf.CAPTIONS, padding="max_length", max_length=16, truncation=True,
                      return_tensors="np")["input_ids"]
            ref = test_hf.reference(model, ids, imgs, sources.OPENAI_MEAN, sources.OPENAI_STD)
            cases.append((f"HF CLIPModel (eos_token_id {'2: largest id' if eos else 'from tokenizer'})",
                          sources.read(str(directory)), imgs, ids, ref))
        siglip = test_hf.make_siglip(tmp / "siglip")
        ids = np.random.default_rng(3).integers(2, 1000, (4, 16))
        ids[0, 5:] = 1
        cases.append(("HF SiglipModel", sources.read(str(tmp / "siglip")), imgs, ids,
                      test_hf.reference(siglip, ids, imgs, (0.5,) * 3, (0.5,) * 3)))
        for case, (weights, _, heads) in test_fixtures.CASES.items():
            ref = test_fixtures.reference(case)
            cases.append((f"{case} ({weights}, open_clip 3.3.0)",
                          sources.read(str(test_fixtures.FIXTURES / weights), **heads), ref["images"],
                          ref["tokens"], (ref["image_emb"], ref["text_emb"])))
        for name, imported, images, tokens, (ref_img, ref_txt) in cases:
            for scan in (False, True):
                model = model_of(imported, scan)
                di = np.abs(model.encode_image(images) - ref_img).max()
                dt = np.abs(model.encode_text(tokens) - ref_txt).max()
                rows.append(f"| {name} | {'scanned' if scan else 'unscanned'} | {di:.2e} | {dt:.2e} |")
    print("| format | blocks | max diff image | max diff text |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
