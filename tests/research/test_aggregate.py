"""jaxclr.aggregate: final value per run, mean +- sample std, NaN never hidden."""
import json
import math

import numpy as np
import pytest

from jaxclr.research import aggregate


def write_run(path, records):
    path.mkdir()
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_final_values_mean_and_sample_std(tmp_path, capsys):
    runs = [write_run(tmp_path / f"seed{i}", [{"step": 10, "zeroshot/a_top1": 0.0, "loss": 5.0},
                                              {"step": 20, "zeroshot/a_top1": v, "loss": 1.0}])
            for i, v in enumerate((0.5, 0.6, 0.7))]
    finals = [aggregate.final_metrics(r) for r in runs]
    assert [f["zeroshot/a_top1"] for f in finals] == [0.5, 0.6, 0.7]
    mean, std, n = aggregate.summarise(finals, ["zeroshot/a_top1"])["zeroshot/a_top1"]
    assert n == 3 and math.isclose(mean, 0.6) and math.isclose(std, 0.1)   # ddof = 1
    aggregate.main(runs)
    out = capsys.readouterr().out
    assert "n = 3" in out and "| zeroshot/a_top1 | 0.600 +- 0.100 |" in out and "loss" not in out


def test_nan_run_makes_the_cell_nan(tmp_path):
    finals = [{"m": 0.9}, {"m": float("nan")}, {"m": 0.8}]
    mean, std, n = aggregate.summarise(finals, ["m"])["m"]
    assert n == 3 and np.isnan(mean) and np.isnan(std)


def test_missing_run_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory"):
        aggregate.final_metrics(tmp_path / "nope")
