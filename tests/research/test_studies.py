"""jaxclr.study: verdict rules on hand-made numbers, the generated README block, and every committed
study under experiments/ (its README block is the one its results/ generate)."""
import json
import math
import pathlib
import subprocess

import numpy as np
import pytest

from jaxclr.research import aggregate, study
from tests.helpers import REPO_ROOT

ROOT = pathlib.Path(REPO_ROOT)
STUDIES = sorted(p.parent for p in (ROOT / "experiments").glob("*/study.json"))


def test_difference_verdicts_follow_the_two_standard_error_rule():
    base = np.array([1.0, 2.0, 3.0])
    high = base + 4.0        # d = 4, SE = sqrt(1/3 + 1/3) = 0.8165, 2 SE = 1.633
    d, se, verdict = study.difference_verdict(base, high, "higher")
    assert (d, se, verdict) == (pytest.approx(4.0), pytest.approx(math.sqrt(2 / 3)), "holds")
    assert study.difference_verdict(base, high, "lower")[2] == "does not hold (higher)"
    assert study.difference_verdict(base, high, "about_equal")[2] == "does not hold (higher)"
    assert study.difference_verdict(base, high, "not_lower")[2] == "holds (higher)"
    assert study.difference_verdict(high, base, "not_lower")[2] == "does not hold (lower)"
    near = base + 1.6        # d = 1.6 < 2 SE = 1.633: about equal
    assert study.difference_verdict(base, near, "higher")[2] == "about equal"
    assert study.difference_verdict(base, near, "about_equal")[2] == "holds"
    assert study.difference_verdict(base, near, "not_lower")[2] == "holds (about equal)"
    assert study.difference_verdict(base, base + 1.7, "higher")[2] == "holds"   # just beyond 2 SE
    assert study.difference_verdict(base, np.array([1.0, np.nan, 2.0]), "higher")[2] == "no verdict (NaN)"
    with pytest.raises(ValueError, match="expect"):
        study.difference_verdict(base, high, "bigger")
    with pytest.raises(ValueError, match=">= 2 runs"):
        study.difference_verdict(base[:1], high, "higher")


def test_correlation_verdicts_use_sign_and_size_of_spearman_rho():
    x = np.arange(6.0)
    assert study.correlation_verdict(x, -x ** 3, "negative")[::2] == (pytest.approx(-1.0), "holds")
    assert study.correlation_verdict(x, -x, "positive")[2] == "does not hold"
    weak = np.array([4.0, 1.0, 2.0, 6.0, 3.0, 5.0])   # rank differences -3 1 1 -2 2 1: rho = 1 - 6*20/210
    rho, _, verdict = study.correlation_verdict(x, weak, "positive")
    assert rho == pytest.approx(3 / 7) and verdict == "weak"
    assert study.correlation_verdict(x, np.full(6, 1.0), "positive")[2].startswith("no verdict")
    assert study.correlation_verdict(x, np.r_[weak[:5], np.nan], "positive")[2] == "no verdict (NaN)"


def test_matches_compares_numbers_as_floats_and_text_as_text():
    row = {"loss.terms.m2mix": "0.1", "model.learn_scale": "False", "seed": "2"}
    assert study.matches(row, {"loss.terms.m2mix": 0.1, "seed": 2})
    assert not study.matches(row, {"loss.terms.m2mix": 0.0})
    assert study.matches(row, {"model.learn_scale": False}) and not study.matches(row, {"model.learn_scale": True})


def _fake_study(tmp_path):
    """A study folder with one sweep of 2 settings x 3 seeds, a README with the markers."""
    rows = []
    for weight, zs in ((0, (0.50, 0.60, 0.70)), (1, (0.80, 0.90, 1.00))):
        for seed, value in enumerate(zs):
            rows.append({"run": f"w={weight},seed={seed}", "loss.terms.uniformity": weight, "seed": seed,
                         "zeroshot/digit_top1": value, "geometry/uniformity_img": -1.0 - weight - seed,
                         "geometry/uniformity_txt": -3.0 - weight})
    (tmp_path / "results" / "main" / "plots").mkdir(parents=True)
    aggregate.write_csv(tmp_path / "results" / "main" / "results.csv", rows)
    (tmp_path / "results" / "main" / "plots" / "a.png").write_bytes(b"png")
    where = {"base": {"label": "CLIP", "where": {"loss.terms.uniformity": 0}},
             "treat": {"label": "CLIP+U", "where": {"loss.terms.uniformity": 1}}}
    (tmp_path / "study.json").write_text(json.dumps({
        "title": "fake", "sweeps": ["main"],
        "tables": [{"title": "T", "sweep": "main", "rows": {"w 0": {"loss.terms.uniformity": 0},
                                                            "w 1": {"loss.terms.uniformity": 1}},
                    "metrics": ["zeroshot/digit_top1", "geometry/uniformity"]}],
        "claims": [{"claim": "U helps", "kind": "difference", "sweep": "main", "metric": "zeroshot/digit_top1",
                    "expect": "higher", "baseline": where["base"], "treatment": where["treat"]},
                   {"claim": "uniform is good", "kind": "correlation", "sweeps": ["main"],
                    "x": "geometry/uniformity", "y": "zeroshot/digit_top1", "expect": "negative"}]}))
    (tmp_path / "README.md").write_text("# fake\n\nhand-written text\n")
    return tmp_path


def test_render_writes_tables_and_verdicts_from_results(tmp_path):
    folder = _fake_study(tmp_path)
    study.write_readme(folder)
    text = (folder / "README.md").read_text()
    assert text.startswith("# fake\n\nhand-written text\n") and study.readme_block(folder) == study.render(folder)
    # w 0: zero-shot 0.6 +- 0.1; uniformity = mean of the parts: -2 - seed/2 -> -2.5 +- 0.5
    assert "| w 0 | 3 | 0.600 +- 0.100 | -2.500 +- 0.500 |" in text
    assert "| w 1 | 3 | 0.900 +- 0.100 | -3.500 +- 0.500 |" in text
    # d = 0.3, 2 SE = 2 sqrt(0.01/3 + 0.01/3) = 0.1633: holds
    assert "d = +0.3000, 2 SE = 0.1633 (n = 3, 3)" in text and "| **holds** |" in text
    assert "![main: a.png](results/main/plots/a.png)" in text
    again = (folder / "README.md").read_text()
    study.write_readme(folder)                                   # idempotent: replaces its own block
    assert (folder / "README.md").read_text() == again
    assert study.main([str(folder), "--check"]) == 0


def test_check_fails_when_the_readme_disagrees_with_results(tmp_path, capsys):
    folder = _fake_study(tmp_path)
    study.write_readme(folder)
    readme = folder / "README.md"
    readme.write_text(readme.read_text().replace("0.600 +- 0.100", "0.650 +- 0.100"))
    assert study.main([str(folder), "--check"]) == 1
    assert "differs from results/" in capsys.readouterr().err


def test_collect_copies_a_finished_sweep_and_refuses_a_missing_one(tmp_path, capsys):
    folder = _fake_study(tmp_path / "study")
    runs = tmp_path / "runs" / "main"
    (runs / "plots").mkdir(parents=True)
    (runs / "results.csv").write_text((folder / "results" / "main" / "results.csv").read_text())
    (runs / "results.md").write_text("# table\n")
    (runs / "plots" / "b.png").write_bytes(b"png2")
    assert study.main([str(folder), "--collect", str(tmp_path / "runs")]) == 0
    assert sorted(p.name for p in (folder / "results" / "main" / "plots").iterdir()) == ["b.png"]
    assert (folder / "results" / "main" / "results.md").read_text() == "# table\n"
    assert study.main([str(folder), "--collect", str(tmp_path / "nowhere")]) == 2
    assert "did the sweep 'main' finish?" in capsys.readouterr().err


def test_there_are_studies():
    assert {p.name for p in STUDIES} >= {"align_uniform", "temperature", "contrastive_gap", "m2mix"}


@pytest.mark.parametrize("folder", STUDIES, ids=lambda p: p.name)
def test_committed_study_readme_matches_its_results(folder):
    """The numbers a study README states are the ones its results/ generate."""
    assert study.readme_block(folder) is not None, f"{folder}/README.md has no generated block"
    assert study.readme_block(folder) == study.render(folder)
    for sweep in study.load(folder)["sweeps"]:
        rows = study.read_rows(folder, sweep)
        assert rows and all(r["seed"] != "" for r in rows)


@pytest.mark.parametrize("script", sorted((ROOT / "experiments").glob("*/reproduce.sh")), ids=lambda p: p.parent.name)
def test_reproduce_scripts_parse(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
