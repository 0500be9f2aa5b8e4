"""jaxclr.sweep: typed grids, exact commands, aggregation and plots (fast); one small real sweep (slow)."""
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from jaxclr import config as configlib
from jaxclr.research import aggregate, grid, plots, sweep
from jaxclr.trainer import final_metrics
from tests.helpers import REPO_ROOT

CLIP = "configs/clip.py:tiny"


def runs_of(*grids, zip_grids=False, fixed=()):
    return grid.make_runs(configlib.load(CLIP), list(grids), zip_grids=zip_grids, fixed=fixed)


def flag_parsed(overrides):
    """The config that ml_collections' own --config.KEY=V parsing (what jaxclr.train uses) gives."""
    argv = ["prog", f"--config={CLIP}", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", CLIP, flag_values=values, sys_argv=argv)
    values(argv)
    return values.config


# ------------------------------------------------------------------ grids (fast)

def test_product_is_outer_first_named_readably_and_typed_like_the_config():
    runs = runs_of("loss.terms.m2mix=0,0.1,0.3", "seed=0,1")
    assert [r.name for r in runs] == [f"loss.terms.m2mix={m},seed={s}" for m in ("0", "0.1", "0.3") for s in (0, 1)]
    assert runs[3].overrides() == ["--config.loss.terms.m2mix=0.1", "--config.seed=1"]
    m2mix, seed = runs[3].values["loss.terms.m2mix"].value, runs[3].values["seed"].value
    assert (m2mix, type(m2mix), seed, type(seed)) == (0.1, float, 1, int)


def test_values_equal_what_config_flags_makes_of_the_same_text():
    runs = runs_of("eval.recall_ks=[1,5],(1, 10)", "model.learn_bias=true,0", "loss.impl=gather,streamed",
                   "data.max_len=40,96", "optim.lr=1e-3,2")
    assert len(runs) == 2 ** 5
    for run in (runs[0], runs[-1], runs[13]):
        config = flag_parsed(run.overrides())
        for key, value in run.values.items():
            *parents, leaf = key.split(".")
            node = config
            for part in parents:
                node = node[part]
            assert node[leaf] == value.value and type(node[leaf]) is type(value.value), key
    assert [r.values["eval.recall_ks"].value for r in runs[::16]] == [(1, 5), (1, 10)]
    assert runs[-1].name == "eval.recall_ks=1-10,model.learn_bias=0,loss.impl=streamed,data.max_len=96,optim.lr=2"


def test_zip_pairs_equal_length_grids():
    runs = runs_of("optim.lr=0.001,0.002,0.004", "seed=5,6,7", zip_grids=True)
    assert [(r.values["optim.lr"].value, r.values["seed"].value) for r in runs] == [(0.001, 5), (0.002, 6), (0.004, 7)]
    with pytest.raises(grid.GridError) as e:
        runs_of("optim.lr=0.001,0.002", "seed=5,6,7", zip_grids=True)
    assert str(e.value) == ("--zip: the grids have different lengths (optim.lr: 2, seed: 3); "
                            "give each the same number of values")


@pytest.mark.parametrize("grids, message", [
    (["loss.terms.m2mx=0,1"], "--grid loss.terms.m2mx: unknown config key; did you mean loss.terms.m2mix, "
                              "loss.terms.vmix, loss.terms.lmix?"),
    (["seed=0,0.5"], "--grid seed=0.5: not a valid int (the type of seed): invalid literal for int() with "
                     "base 10: '0.5'"),
    (["optim.lr=fast"], "--grid optim.lr=fast: not a valid float (the type of optim.lr): could not convert "
                        "string to float: 'fast'"),
    (["model.learn_bias=maybe"], "--grid model.learn_bias=maybe: not a valid bool (the type of "
                                 "model.learn_bias): Non-boolean argument to boolean flag"),
    (["seed"], "--grid seed: write KEY=V1,V2,... (e.g. --grid seed=0,1,2)"),
    (["seed=1,,2"], "--grid seed: an empty value; separate values with single commas"),
    (["eval.recall_ks=[1,5"], "--grid eval.recall_ks: unclosed bracket or quote in '[1,5'"),
    (["seed=1", "seed=2"], "--grid seed: given twice; list all its values in one --grid"),
    (["loss.impl=a/b,a_b"], "--grid: runs loss.impl=a/b and loss.impl=a_b get the same directory name "
                            "'loss.impl=a_b'; make the values differ in letters or digits"),
    ([], "--grid: give at least one, e.g. --grid seed=0,1,2"),
])
def test_bad_grids_are_one_line_errors(grids, message):
    with pytest.raises(grid.GridError) as e:
        runs_of(*grids)
    assert str(e.value) == message


def test_cli_usage_errors_exit_2_with_one_line_each(tmp_path, capsys):
    base = [f"--config={CLIP}", f"--workdir={tmp_path}", "--grid=seed=0,1"]
    for extra, line in (
            (["--config.seed=3"], "error: --grid seed: also set by --config.seed; drop one of them"),
            (["--config.optim.lr=x"], "error: --config.optim.lr=x: not a valid float (the type of optim.lr): "
                                      "could not convert string to float: 'x'"),
            (["--config.optim.lrr=1"], "error: optim.lrr: unknown config key; did you mean optim.lr, optim, "
                                       "optim.b2?"),
            (["--verbose"], "error: --verbose: unknown argument; config overrides are --config.KEY=VALUE")):
        with pytest.raises(SystemExit) as e:
            sweep.main(base + extra)
        assert e.value.code == 2
        assert capsys.readouterr().err.splitlines() == [line]
    assert os.listdir(tmp_path) == []


def test_print_commands_and_dry_run_do_not_import_jax(tmp_path):
    code = ("import sys; from jaxclr.research import sweep\n"
            f"sweep.main(['--config={CLIP}', '--workdir={tmp_path}', '--grid', 'seed=0,1', '--print-commands'])\n"
            f"sweep.main(['--config={CLIP}', '--workdir={tmp_path}', '--grid', 'seed=0,1', '--dry-run'])\n"
            "assert not [m for m in sys.modules if m == 'jax' or m.startswith('jax.')], 'jax imported'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    cache = f"JAX_COMPILATION_CACHE_DIR={tmp_path}/.xla_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 " \
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0"
    assert out == [f"{cache} {shlex.quote(sys.executable)} -m jaxclr.train --config={CLIP} "
                   f"--workdir={tmp_path}/seed={s} --config.seed={s}" for s in (0, 1)] + \
        [f"[{i}/2] seed={i - 1}: new; would run" for i in (1, 2)]


# ------------------------------------------------------------------ aggregation and plots on made-up runs (fast)

def fake_run(root, name, seed, final, losses):
    """A finished run directory as jaxclr.train leaves it (config.json, metrics.jsonl, final.json)."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"seed": seed}))
    records = [{"step": s, "loss": v} for s, v in enumerate(losses, 1)]
    records.append({"step": len(losses), "zeroshot/color_top1": -1.0})      # overwritten by the later line
    records.append({"step": len(losses) + 1, **final})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    final_metrics.write(run, len(losses), final)


FAKE = {  # (m2mix text, seed) -> final eval metrics
    ("0", 0): {"zeroshot/color_top1": 0.50, "geometry/alignment": 1.0, "geometry/uniformity_img": -2.0,
               "geometry/uniformity_txt": -1.0},
    ("0", 1): {"zeroshot/color_top1": 0.70, "geometry/alignment": 1.2, "geometry/uniformity_img": -2.2,
               "geometry/uniformity_txt": -1.2},
    ("0.5", 0): {"zeroshot/color_top1": 0.25, "geometry/alignment": 0.8, "geometry/uniformity_img": -1.8,
                 "geometry/uniformity_txt": -0.8},
}


def test_aggregate_only_tables_and_plots_made_up_runs(tmp_path, capsys):
    for (m2mix, seed), final in FAKE.items():
        fake_run(tmp_path, f"loss.terms.m2mix={m2mix},seed={seed}", seed, final, [3.0, 2.0 - seed])
    assert sweep.main([f"--config={CLIP}", f"--workdir={tmp_path}", "--grid", "loss.terms.m2mix=0,0.5",
                       "--grid", "seed=0,1", "--aggregate-only"]) == 0   # m2mix=0.5,seed=1 never ran
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["loss.terms.m2mix"], r["seed"], r["loss"], r["zeroshot/color_top1"]) for r in rows] == [
        ("loss.terms.m2mix=0,seed=0", "0.0", "0", "2.0", "0.5"),
        ("loss.terms.m2mix=0,seed=1", "0.0", "1", "1.0", "0.7"),
        ("loss.terms.m2mix=0.5,seed=0", "0.5", "0", "2.0", "0.25")]
    table = (tmp_path / "results.md").read_text().splitlines()
    assert "| metric | loss.terms.m2mix=0.0 (n=2) | loss.terms.m2mix=0.5 (n=1) |" in table
    assert "| zeroshot/color_top1 | 0.6000 +- 0.1414 | 0.2500 |" in table   # std of 0.5, 0.7 (ddof 1) = 0.1414
    assert "| loss | 1.5000 +- 0.7071 | 2.0000 |" in table
    plots = sorted(os.listdir(tmp_path / "plots"))
    assert plots == ["alignment_uniformity.png", "loss_curves.png", "metrics_vs_loss.terms.m2mix.png"]
    for name in plots:
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_points_are_the_group_means(tmp_path):
    rows = [{"run": f"r{i}", "loss.impl": impl, "model.learn_bias": bias, "seed": seed, "m/x": value,
             "geometry/alignment": 1.0, "geometry/uniformity": -value}
            for i, (impl, bias, seed, value) in enumerate([("gather", True, 0, 1.0), ("gather", True, 1, 3.0),
                                                            ("streamed", True, 0, 5.0), ("gather", False, 0, 7.0)])]
    fig = plots.metrics_vs_param(rows, "loss.impl", ["model.learn_bias"], ["m/x"])
    lines = {bars.get_label(): (list(bars.lines[0].get_xdata()), list(bars.lines[0].get_ydata()))
             for bars in fig.axes[0].containers}
    assert lines == {"learn_bias=True": ([0.0, 1.0], [2.0, 5.0]), "learn_bias=False": ([0.0], [7.0])}
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["gather", "streamed"]
    bars = fig.axes[0].containers[0].lines[2][0].get_segments()   # seeds 1.0 and 3.0: std sqrt(2); n = 1: none
    assert np.allclose(np.asarray(bars), [[[0, 2 - 2 ** 0.5], [0, 2 + 2 ** 0.5]], [[1, 5], [1, 5]]])
    fig = plots.alignment_uniformity(rows, "m/x", ["loss.impl", "model.learn_bias"])
    points = {c.get_label(): [list(p) for p in c.get_offsets()] for c in fig.axes[0].collections}
    assert points == {"impl=gather, learn_bias=True: 2.000": [[1.0, -1.0], [1.0, -3.0]],   # seeds share a setting
                      "impl=streamed, learn_bias=True: 5.000": [[1.0, -5.0]],
                      "impl=gather, learn_bias=False: 7.000": [[1.0, -7.0]]}
    assert len(fig.axes[0].texts) == 0                        # no run labelled point by point
    written = plots.plot_sweep(tmp_path, rows, ["loss.impl", "seed"], ["m/x"], {"r0": ([1, 2], [3.0, 2.5])})
    assert [os.path.basename(p) for p in written] == ["metrics_vs_loss.impl.png", "loss_curves.png",
                                                      "alignment_uniformity.png"]


def test_short_names_keep_keys_apart():
    assert plots.short_names(["loss.terms.clip", "loss.terms.uniformity", "model.init_scale"]) == {
        "loss.terms.clip": "clip", "loss.terms.uniformity": "uniformity", "model.init_scale": "init_scale"}
    assert plots.short_names(["a.scale", "b.scale", "c"]) == {"a.scale": "a.scale", "b.scale": "b.scale", "c": "c"}


def test_legends_sit_inside_the_saved_image(tmp_path):
    """Nothing is cut at the border: every legend's box lies inside the PNG that savefig writes."""
    import matplotlib.image
    rows = [{"run": f"r{i}", "loss.terms.uniformity": u, "seed": seed, "zeroshot/x_top1": 0.1 * i,
             "geometry/alignment": 0.1 * i, "geometry/uniformity": -float(i)}
            for i, (u, seed) in enumerate([(0.25, 0), (0.25, 1), (4.0, 0), (4.0, 1)])]
    curves = {row["run"]: ([1, 2], [2.0, 1.0 + 0.1 * i]) for i, row in enumerate(rows)}
    written = plots.plot_sweep(tmp_path, rows, ["loss.terms.uniformity", "seed"], ["zeroshot/x_top1"], curves)
    fig = plots.alignment_uniformity(rows, "zeroshot/x_top1", ["loss.terms.uniformity"])
    fig.canvas.draw()
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["uniformity=0.25: 0.050", "uniformity=4: 0.250"]
    tight = fig.get_tightbbox(fig.canvas.get_renderer())
    box = legend.get_window_extent().transformed(fig.dpi_scale_trans.inverted())
    assert tight.x0 <= box.x0 and box.x1 <= tight.x1 and tight.y0 <= box.y0 and box.y1 <= tight.y1
    lines = plots.loss_curves(curves, {"r0": "a", "r1": "a", "r2": "b", "r3": "b"}).axes[0]
    assert [t.get_text() for t in lines.get_legend().get_texts()] == ["a", "b"]   # one entry per setting
    assert lines.lines[0].get_color() == lines.lines[1].get_color() != lines.lines[2].get_color()
    for path in written:
        assert matplotlib.image.imread(path).shape[1] > 400


def test_replot_redraws_from_results_csv_with_the_same_numbers(tmp_path, capsys):
    rows = [{"run": f"loss.terms.clip={c},seed={s}", "loss.terms.clip": c, "seed": s, "loss": 1.0 / (1 + s),
             "zeroshot/x_top1": 0.1 + 0.3 * c + 0.01 * s, "geometry/alignment": 0.5 * c + 0.1 * s,
             "geometry/uniformity": -1.0 - c} for c in (0.0, 1.0) for s in (0, 1, 2)]
    aggregate.write_csv(tmp_path / "results.csv", rows)
    back, params, metrics = plots.read_results(tmp_path / "results.csv")
    assert back == rows and params == ["loss.terms.clip", "seed"]
    assert metrics == ["zeroshot/x_top1", "geometry/alignment", "geometry/uniformity"]
    assert plots.main([str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path / "plots")) == ["alignment_uniformity.png", "metrics_vs_loss.terms.clip.png"]
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    os.makedirs(tmp_path / "bad")
    os.replace(tmp_path / "bad.csv", tmp_path / "bad" / "results.csv")
    assert plots.main([str(tmp_path / "bad")]) == 2
    assert "not a sweep's results.csv" in capsys.readouterr().err


def test_grouped_markdown_marks_cells_with_fewer_runs():
    groups = aggregate.group([{"k": 1, "a": 1.0, "b": 2.0}, {"k": 1, "a": 3.0}, {"k": 2}], ["k"])
    assert aggregate.grouped_markdown(groups, ["a", "b"], digits=2).splitlines() == [
        "| metric | k=1 (n=2) | k=2 (n=1) |", "|---|---:|---:|", "| a | 2.00 +- 1.41 | - |", "| b | 2.00 (n=1) | - |"]


# ------------------------------------------------------------------ a real 2 x 2 sweep (slow: 5 short train runs)

def tiny_overrides(data_dir):
    """--config.KEY=V for every key where test_train's tiny run differs from the preset, saving and
    evaluating only at the end. The train step is test_train's, so the session's persistent
    compilation cache (conftest) compiles it once for both files."""
    from tests.helpers import tiny_run_config

    tiny = tiny_run_config(data_dir)
    tiny.checkpoint.every, tiny.eval.every = tiny.train.total_steps, 0
    base, tiny = (configlib.flatten(configlib.to_json(c)) for c in (configlib.load(CLIP), tiny))
    return [f"--config.{k}={v}" for k, v in tiny.items() if base[k] != v]


NAMES = [f"model.init_scale={scale},seed={seed}" for scale in (10, 20) for seed in (0, 1)]


def last_values(run_dir):
    """{name: value at its largest step}, read here from the run's own metrics.jsonl."""
    out = {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for record in map(json.loads, f):
            out.update({k: (record["step"], v) for k, v in record.items()
                        if k != "step" and (k not in out or record["step"] >= out[k][0])})
    return {k: v for k, (_, v) in out.items()}


def files_with_times(directory):
    return {os.path.join(root, name): os.stat(os.path.join(root, name)).st_mtime_ns
            for root, _, names in os.walk(directory) for name in names}


@pytest.mark.slow
def test_sweep_runs_resumes_skips_aggregates_and_reports_failures(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    workdir = tmp_path / "sweep"
    base = [f"--config={CLIP}", f"--workdir={workdir}", *tiny_overrides(data_dir)]
    grid = ["--grid", "model.init_scale=10,20", "--grid", "seed=0,1"]

    # The commands, exactly; the first one, stopped after step 1, leaves a partial run.
    assert sweep.main(base + grid + ["--print-commands"]) == 0
    commands = capsys.readouterr().out.splitlines()
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sweep.environment(str(workdir)).items())
    assert commands == [f"{env} {shlex.join([sys.executable, '-m', 'jaxclr.train', f'--config={CLIP}'])} "
                        f"{shlex.quote(f'--workdir={workdir}/{name}')} {shlex.join(base[2:])} "
                        f"--config.model.init_scale={name[17:19]} --config.seed={name[-1]}" for name in NAMES]
    subprocess.run(["bash", "-c", commands[0] + " --config.train.stop_at=1"], check=True, capture_output=True)
    assert final_metrics.read(workdir / NAMES[0]) is None and sweep.checkpoint_step(workdir / NAMES[0]) == 1

    # The sweep finishes the partial run from step 1 and runs the other three.
    assert sweep.main(base + grid) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"[1/4] {NAMES[0]}: resuming, partial (checkpoint at step 1)"
    assert [line.split(": ")[1] for line in out[2:8:2]] == ["starting"] * 3
    assert [line.split(": ")[1].split(" in ")[0] for line in out[1:8:2]] == ["done"] * 4
    assert out[-1] == "4/4 runs finished"
    log = (workdir / "logs" / f"{NAMES[0]}.log").read_text()
    assert log.count("$ ") == 1 and "resumed from step 1" in log   # only the sweep's own launch is logged
    logged = [r["step"] for r in map(json.loads, open(workdir / NAMES[0] / "metrics.jsonl")) if "loss" in r]
    assert logged == [4, 8, 12, 16, 20, 24]

    # results.csv holds each run's final metrics as its metrics.jsonl has them; results.md their mean +- std.
    with open(workdir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == NAMES
    finals = {name: last_values(workdir / name) for name in NAMES}
    for row in rows:
        final = finals[row["run"]]
        metrics = [k for k in row if "/" in k]
        assert len(metrics) > 10 and "zeroshot/color_top1" in metrics and "geometry/alignment" in metrics
        assert {k: float(row[k]) for k in metrics + ["loss"]} == {k: final[k] for k in metrics + ["loss"]}
        assert final_metrics.read(workdir / row["run"])["metrics"] == {k: final[k] for k in metrics}
        assert (float(row["model.init_scale"]), int(row["seed"])) == (float(row["run"][17:19]), int(row["run"][-1]))
    table = (workdir / "results.md").read_text()
    assert "| metric | model.init_scale=10.0 (n=2) | model.init_scale=20.0 (n=2) |" in table
    for name in ("zeroshot/color_top1", "geometry/alignment", "loss"):
        cells = [(statistics.mean(v), statistics.stdev(v)) for v in
                 ([finals[n][name] for n in NAMES[:2]], [finals[n][name] for n in NAMES[2:]])]
        assert f"| {name} | " + " | ".join(f"{m:.4f} +- {s:.4f}" for m, s in cells) + " |" in table
    plots = sorted(os.listdir(workdir / "plots"))
    assert plots == ["alignment_uniformity.png", "loss_curves.png", "metrics_vs_model.init_scale.png"]
    assert all(os.path.getsize(workdir / "plots" / p) > 1000 for p in plots)

    # Again, zipped with one more run that fails validation: the finished four are skipped
    # (nothing of theirs touched), the failure is reported with its error line, the exit code is 1.
    before = {k: v for k, v in files_with_times(workdir).items() if os.sep + "model.init_scale=" in k}
    zipped = ["--zip", "--grid", "model.init_scale=10,10,20,20,-1", "--grid", "seed=0,1,0,1,0"]
    assert sweep.main(base + zipped) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == [f"[{i}/5] {name}: skipped (finished at step 24)" for i, name in enumerate(NAMES, 1)]
    assert out[4] == "[5/5] model.init_scale=-1,seed=0: starting"
    assert out[5].startswith("[5/5] model.init_scale=-1,seed=0: FAILED (exit 2) after ")
    assert out[6] == "    error: model.init_scale: -1.0 must be > 0; set the initial logit scale, e.g. 1/0.07"
    assert out[-1] == "4/5 runs finished; failed: model.init_scale=-1,seed=0"
    assert {k: v for k, v in files_with_times(workdir).items() if k in before} == before
    with open(workdir / "results.csv") as f:
        assert [r["run"] for r in csv.DictReader(f)] == NAMES
