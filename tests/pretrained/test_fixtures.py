"""OpenAI/open_clip state dicts and big_vision SigLIP npz files, against embeddings open_clip computed.

The fixtures (tests/fixtures/pretrained/, made by make_fixtures.py with open_clip 3.3.0 in a throwaway
venv) hold random small models in each source layout and open_clip's own embeddings of fixed images and
token ids (padding after the end token). Here each is imported into a run (scanned and unscanned), loaded
with `jaxclr.load` and compared; also the in-memory load, the CLI's error lines and the .pt path.
"""
import pathlib
import sys

import numpy as np
import pytest

import jaxclr
from jaxclr.pretrained import cli, import_run, sources

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "pretrained"
TOL = 2e-6   # the issue asks <= 2e-5; measured <= 2.6e-7 (docs/pretrained.md)
CASES = {"openai": ("openai_clip.safetensors", "openai_clip_ref.npz", dict(heads=2, text_heads=2)),
         "big_vision": ("big_vision_siglip.npz", "big_vision_siglip_ref.npz", {})}


def reference(case):
    with np.load(FIXTURES / CASES[case][1]) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("scan", [False, True])
def test_imported_checkpoint_gives_open_clips_embeddings(tmp_path, case, scan):
    weights, _, heads = CASES[case]
    imported = sources.read(str(FIXTURES / weights), **heads)
    assert imported.format == case
    run = import_run.write(imported, str(tmp_path / "run"), scan_layers=scan)
    model = jaxclr.load(run)
    ref = reference(case)
    np.testing.assert_allclose(model.encode_image(ref["images"]), ref["image_emb"], atol=TOL, rtol=0)
    np.testing.assert_allclose(model.encode_text(ref["tokens"]), ref["text_emb"], atol=TOL, rtol=0)
    assert model.logit_scale == pytest.approx(float(ref["logit_scale"]), rel=1e-6)
    assert model.logit_bias == pytest.approx(float(ref.get("logit_bias", 0.0)), rel=1e-6)
    resize = "clip" if case == "openai" else "squash"   # the format's published preprocessing
    assert model.config.data.eval_resize == resize


def test_in_memory_load_equals_the_run(tmp_path):
    weights, _, heads = CASES["openai"]
    ref = reference("openai")
    direct = jaxclr.load(str(FIXTURES / weights), **heads)
    np.testing.assert_allclose(direct.encode_image(ref["images"]), ref["image_emb"], atol=TOL, rtol=0)
    assert not list(tmp_path.iterdir())   # nothing written


def test_the_wrong_head_count_is_refused_or_visible():
    """OpenAI's layout does not store heads: the default rule (width // 64 = 1 head here) gives another
    function, which the reference shows; a count that does not divide the width is one line."""
    ref = reference("openai")
    model = jaxclr.load(str(FIXTURES / "openai_clip.safetensors"))
    assert np.abs(model.encode_image(ref["images"]) - ref["image_emb"]).max() > 1e-3
    with pytest.raises(ValueError, match="do not divide the width 64"):
        sources.read(str(FIXTURES / "openai_clip.safetensors"), heads=3)


def run_cli(main, argv, capsys, monkeypatch):
    from absl import flags
    for name in list(flags.FLAGS):
        if name in ("source", "workdir", "tokenizer", "heads", "text_heads", "scan_layers"):
            delattr(flags.FLAGS, name)
    monkeypatch.setattr(sys, "argv", ["import_weights", *argv])
    with pytest.raises(SystemExit) as e:
        cli.import_cli()
    return e.value.code, capsys.readouterr()


def test_import_cli_writes_a_run_or_one_error_line(tmp_path, capsys, monkeypatch):
    code, out = run_cli(cli.import_main, [f"--source={FIXTURES / 'big_vision_siglip.npz'}",
                                          f"--workdir={tmp_path / 'run'}"], capsys, monkeypatch)
    assert code == 0 and "imported big_vision (siglip)" in out.out
    assert (tmp_path / "run" / "config.json").exists() and (tmp_path / "run" / "checkpoints" / "0").is_dir()
    code, out = run_cli(cli.import_main, [f"--source={FIXTURES / 'big_vision_siglip.npz'}",
                                          f"--workdir={tmp_path / 'run'}"], capsys, monkeypatch)
    assert code == 2 and out.err.strip().splitlines() == [f"error: --workdir={tmp_path / 'run'} already holds a run; "
                                                          "import into a new directory"]
    bad = tmp_path / "bad.npz"
    with np.load(FIXTURES / "big_vision_siglip.npz") as z:
        np.savez(bad, **{k: z[k] for k in z.files if "MAPHead_0/probe" not in k})
    code, out = run_cli(cli.import_main, [f"--source={bad}", f"--workdir={tmp_path / 'run2'}"], capsys, monkeypatch)
    assert code == 2 and len(out.err.strip().splitlines()) == 1 and "MAPHead_0/probe" in out.err
    assert "found nothing (missing)" in out.err and not (tmp_path / "run2").exists()


def test_a_pt_file_without_torch_is_one_line_saying_how_to_convert(tmp_path, monkeypatch):
    (tmp_path / "ViT-B-32.pt").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)   # `import torch` fails as if torch were not installed
    with pytest.raises(sources.SourceError) as e:
        sources.read(str(tmp_path / "ViT-B-32.pt"))
    assert "\n" not in str(e.value) and "needs torch, which is not installed" in str(e.value)
    assert "safetensors" in str(e.value)


def test_a_pt_state_dict_reads_like_its_safetensors(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file
    tensors = load_file(str(FIXTURES / "openai_clip.safetensors"))
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, tmp_path / "model.pt")
    a = sources.read(str(tmp_path / "model.pt"), heads=2, text_heads=2)
    b = sources.read(str(FIXTURES / "openai_clip.safetensors"), heads=2, text_heads=2)
    assert sorted(a.params) == sorted(b.params)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
