"""Figures of runs, experiments and comparisons: `rlsdk.research.report`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from rlsdk import ConfigError
from rlsdk.config import load_config
from rlsdk.plugins import get_registry
from rlsdk.provenance.rundir import read_metrics
from rlsdk.research.compare import compare
from rlsdk.research.experiment import ExperimentSpec, load_scores, load_spec, run_experiment, run_path
from rlsdk.research.report import (
    DYNAMICS_KEYS,
    _comparison_figure,
    _experiment_curves,
    _present_keys,
    arm_colors,
    curve_band,
    plot_comparison,
    plot_experiment,
    plot_run,
    report,
    significant_steps,
)
from rlsdk.trainer import train

TINY = [
    "train.prompts_per_step=2", "sampler.n=2", "policy.d_model=16", "policy.n_layers=1", "policy.n_heads=2",
    "run.plot=false", "eval.size=4", "eval.every=2", "train.steps=3",
]  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_shape(path: Path) -> tuple[int, int]:
    """(height, width) in pixels, each rounded to the nearest 10: matplotlib 3.7 makes a 9.0 in figure
    at 100 dpi 899 px high where 3.10 makes it 900."""
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width = matplotlib.image.imread(path).shape[:2]
    return round(height, -1), round(width, -1)


def no_open_figures() -> bool:
    import matplotlib.pyplot as plt

    return plt.get_fignums() == []


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    registry = get_registry()
    path = tmp_path_factory.mktemp("run") / "run"
    train(load_config(registry, overrides=TINY), registry, run_dir=path, progress=False)
    return path


@pytest.fixture(scope="module")
def exp_dir(tmp_path_factory) -> Path:
    """2 arms x 2 seeds x 3 steps, scored by a training metric (no evaluation of checkpoints)."""
    root = tmp_path_factory.mktemp("exp")
    spec = {
        "seeds": 2,
        "overrides": TINY,
        "arms": {"grpo": [], "reinforce": ["loss.name=reinforce"]},
        "score": "reward/mean",
        "last": 1,
    }
    (root / "exp.yaml").write_text(yaml.safe_dump(spec))
    run_experiment(load_spec(root / "exp.yaml"), get_registry(), root / "out", log=lambda _: None)
    return root / "out"


def copy_experiment(exp_dir: Path, dest: Path) -> Path:
    return Path(
        shutil.copytree(exp_dir, dest, ignore=shutil.ignore_patterns("checkpoints", "*.png", "comparison.json"))
    )


# --------------------------------------------------------------------------------------------------
# curve_band and the panel selection


RUNS = [
    [{"step": 1, "x": 1.0}, {"step": 2, "x": 2.0}, {"step": 3, "x": 3.0}, {"step": 4, "x": 4.0}],
    [{"step": 1, "x": 2.0}, {"step": 2, "x": None}, {"step": 3, "x": 6.0}, {"step": 4, "x": 8.0}],
    [{"step": 1, "x": 0.0}, {"step": 2}, {"step": 3, "x": 3.0}, {"step": 4, "x": 12.0}, {"step": 5, "x": "inf"}],
]


def test_curve_band_by_hand():
    # Step 2 drops out (a null in run 2, missing in run 3), step 5 too (only run 3, and not finite).
    steps, med, lo, hi = curve_band(RUNS, "x")
    assert steps.tolist() == [1, 3, 4]
    # step 1: sorted [0, 1, 2]; step 3: [3, 3, 6]; step 4: [4, 8, 12]. Linear interpolation at
    # positions 0.2 (10th) and 1.8 (90th) of three values.
    np.testing.assert_allclose(med, [1, 3, 8])
    np.testing.assert_allclose(lo, [0.2, 3.0, 4.8])
    np.testing.assert_allclose(hi, [1.8, 5.4, 11.2])
    steps, med, lo, hi = curve_band(RUNS, "x", low=0, high=100)
    np.testing.assert_allclose(lo, [0, 3, 4]) and np.testing.assert_allclose(hi, [2, 6, 12])


def test_curve_band_smooths_with_a_trailing_window():
    # Each run's own finite points, averaged over the last 2 (the first point alone), step labels kept:
    # run 1: 1, 1.5, 2.5, 3.5 at steps 1-4; run 2: 2, 4, 7 at 1, 3, 4; run 3: 0, 1.5, 7.5 at 1, 3, 4.
    steps, med, lo, hi = curve_band(RUNS, "x", smooth=2)
    assert steps.tolist() == [1, 3, 4]
    np.testing.assert_allclose(med, [1, 2.5, 7])  # step 3: [1.5, 2.5, 4]; step 4: [3.5, 7, 7.5]
    np.testing.assert_allclose(lo, [0.2, 1.7, 4.2])
    np.testing.assert_allclose(hi, [1.8, 3.7, 7.4])
    # One run: the band is the run itself, and a window of 3 averages up to the 3 last points.
    steps, med, lo, hi = curve_band(RUNS[:1], "x", smooth=3)
    assert steps.tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(med, [1, 1.5, 2, 3]) and np.testing.assert_allclose(lo, med)


def test_curve_band_edges_and_errors():
    assert all(len(a) == 0 for a in curve_band(RUNS, "missing"))
    assert all(len(a) == 0 for a in curve_band([], "x"))
    with pytest.raises(ConfigError, match="0 <= low <= high <= 100"):
        curve_band(RUNS, "x", low=90, high=10)
    with pytest.raises(ConfigError, match="smooth must be an integer >= 1"):
        curve_band(RUNS, "x", smooth=0)


def test_present_keys_keeps_order_and_skips_absent_or_null_keys():
    rows = [{"step": 1, "loss": 0.5, "kl": None}, {"step": 2, "loss": 0.4, "kl": None, "eval/reward": 0.1}]
    assert _present_keys(rows, ("eval/reward", "kl", "loss", "grad_norm")) == ["eval/reward", "loss"]
    assert _present_keys([], DYNAMICS_KEYS) == []


# --------------------------------------------------------------------------------------------------
# plot_run


def test_plot_run_draws_one_panel_per_present_key(run_dir, tmp_path):
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert _present_keys(rows, DYNAMICS_KEYS) == list(DYNAMICS_KEYS)  # this trainer logs all of them
    path = plot_run(run_dir)
    assert path == run_dir / "dynamics.png" and no_open_figures()
    assert png_shape(path) == (900, 1260)  # 3 x 3 panels of 420 x 280 px, plus 60 px for the title
    # A key absent from the data gets no panel: one panel only.
    one = plot_run(run_dir, tmp_path / "one.png", keys=("reward/mean", "not/logged"))
    assert png_shape(one) == (340, 420)
    with pytest.raises(ConfigError, match="logs none of not/logged; it logs .*reward/mean"):
        plot_run(run_dir, tmp_path / "none.png", keys=("not/logged",))
    assert not (tmp_path / "none.png").exists() and no_open_figures()


# --------------------------------------------------------------------------------------------------
# plot_experiment


def test_plot_experiment_lines_are_the_seed_median_and_band(exp_dir):
    spec = ExperimentSpec(**yaml.safe_load((exp_dir / "experiment.yaml").read_text()))
    curves, seeds, _ = _experiment_curves(exp_dir, spec, "default", DYNAMICS_KEYS, smooth=1)
    assert seeds == {"grpo": [0, 1], "reinforce": [0, 1]}
    assert list(curves) == list(DYNAMICS_KEYS)
    for arm in spec.arms:
        runs = [read_metrics(run_path(exp_dir, arm, "default", s) / "metrics.jsonl") for s in (0, 1)]
        for key in ("loss", "entropy", "eval/reward"):
            a, b = (np.array([r[key] for r in rows if key in r]) for rows in runs)
            steps, med, lo, hi = curve_band(runs, key)
            assert steps.tolist() == ([2] if key == "eval/reward" else [1, 2, 3])
            # Two seeds: the median is their mean, the 10th/90th percentiles lie 10% in from each end.
            np.testing.assert_allclose(med, (a + b) / 2)
            np.testing.assert_allclose(lo, np.minimum(a, b) + 0.1 * np.abs(a - b))
            np.testing.assert_allclose(hi, np.minimum(a, b) + 0.9 * np.abs(a - b))
            for got, want in zip(curves[key][arm], (steps, med, lo, hi)):
                np.testing.assert_array_equal(got, want)
    path = plot_experiment(exp_dir)
    assert path == exp_dir / "curves.png" and png_shape(path)[1] == 1260 and no_open_figures()


def test_plot_experiment_uses_the_runs_that_exist(exp_dir, tmp_path):
    out = copy_experiment(exp_dir, tmp_path / "exp")
    data = yaml.safe_load((out / "experiment.yaml").read_text())
    data["arms"]["cispo"] = ["loss.name=cispo"]  # an arm with no runs yet
    (out / "experiment.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (run_path(out, "reinforce", "default", 1) / "metrics.jsonl").unlink()
    spec = ExperimentSpec(**data)
    curves, seeds, _ = _experiment_curves(out, spec, "default", DYNAMICS_KEYS, smooth=2)
    assert seeds == {"grpo": [0, 1], "reinforce": [0]} and set(curves["loss"]) == {"grpo", "reinforce"}
    alone = read_metrics(run_path(out, "reinforce", "default", 0) / "metrics.jsonl")
    np.testing.assert_allclose(curves["loss"]["reinforce"][1], curve_band([alone], "loss", smooth=2)[1])
    assert plot_experiment(out, out / "x.png", keys=("loss",), smooth=2).exists() and no_open_figures()
    with pytest.raises(ConfigError, match="task 'defualt' is not in .*did you mean 'default'"):
        plot_experiment(out, task="defualt")


# --------------------------------------------------------------------------------------------------
# plot_comparison


def synthetic_comparison(arms: int) -> dict:
    rng = np.random.default_rng(0)
    scores = {name: rng.normal(i, 1.0, size=(5, 2)) for i, name in enumerate(["base", "plus1", "plus2"][:arms])}
    return {**compare(scores, reps=300, pair_reps=200).to_dict(), "score": "eval/reward"}


def test_plot_comparison_draws_intervals_and_probabilities(tmp_path):
    data = synthetic_comparison(3)
    fig = _comparison_figure(data)
    try:
        left, right = fig.axes
        assert [t.get_text() for t in left.get_yticklabels()] == ["base (n=5) [baseline]", "plus1 (n=5)", "plus2 (n=5)"]
        assert [t.get_text().rstrip(" *") for t in right.get_yticklabels()] == ["plus1", "plus2"]
        assert right.get_yticks().tolist() == [1, 2]  # on the rows of the left panel
        assert [list(map(float, line.get_xdata())) for line in right.lines if len(line.get_xdata()) == 2] == [
            [0.5, 0.5]
        ]
        assert fig._suptitle.get_text() == "eval/reward, iqm with 95% CI; baseline base"
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    path = plot_comparison(data, tmp_path / "c.png")
    assert png_shape(path) == (290, 1000) and no_open_figures()


def test_plot_comparison_of_the_baseline_alone_has_one_panel(tmp_path):
    data = synthetic_comparison(1)
    data["arms"][0]["value"]["low"] = None  # a non-finite bound (None in comparison.json) draws the point only
    fig = _comparison_figure(data)
    assert len(fig.axes) == 1
    import matplotlib.pyplot as plt

    plt.close(fig)
    assert png_shape(plot_comparison(data, tmp_path / "c.png")) == (190, 550)
    with pytest.raises(ConfigError, match="needs 'arms' and 'baseline'"):
        plot_comparison({"metric": "iqm"}, tmp_path / "bad.png")
    assert no_open_figures()


def test_arm_colors_follow_the_arm_order():
    colors = arm_colors(["base", "a", "b"])
    assert list(colors) == ["base", "a", "b"] and len(set(colors.values())) == 3
    assert arm_colors(["base", "a", "b", "c"])["b"] == colors["b"]  # the i-th arm, the i-th colour
    many = arm_colors([f"arm{i}" for i in range(20)])
    assert len(set(many.values())) == 20


@pytest.mark.parametrize("significant", [False, True])
def test_each_arm_has_one_colour_in_every_plot(exp_dir, tmp_path, monkeypatch, significant):
    """curves.png and comparison.png draw each arm in its colour of arm_colors(spec.arms), the baseline
    included, even when the comparison's baseline (listed first there) is not the experiment's first arm."""
    import matplotlib.colors

    from rlsdk.research import report as report_module

    out = copy_experiment(exp_dir, tmp_path / "exp")
    scores, seeds, spec = load_scores(out)
    data = {**compare(scores, "reinforce", reps=200, pair_reps=100).to_dict(), "seeds": seeds}
    assert data["arms"][1]["arm"] == "grpo"
    data["arms"][1]["significant"] = significant  # significant: filled; not: hollow
    (out / "comparison.json").write_text(json.dumps(data))
    drawn, markers = {}, []  # file name -> {arm: colours its elements are drawn in}; the comparison's markers
    save = report_module._save

    def record(fig, path, rect=(0, 0, 1, 1)):
        seen = {}
        if fig.legends:  # curves: the legend's lines, "<arm> (2 seeds)"
            for text, handle in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles):
                seen.setdefault(text.get_text().split(" ")[0], set()).add(matplotlib.colors.to_hex(handle.get_color()))
        else:  # comparison: each row's label and its marker, on both panels
            for ax in fig.axes:
                rows = {
                    round(t): label.get_text().split(" ")[0] for t, label in zip(ax.get_yticks(), ax.get_yticklabels())
                }
                for label in ax.get_yticklabels():
                    seen.setdefault(label.get_text().split(" ")[0], set()).add(
                        matplotlib.colors.to_hex(label.get_color())
                    )
                for line in ax.lines:
                    if line.get_marker() in ("o", "D") and len(line.get_ydata()) == 1:
                        arm = rows[round(line.get_ydata()[0])]
                        markers.append(arm)
                        seen.setdefault(arm, set()).add(matplotlib.colors.to_hex(line.get_markeredgecolor()))
                        filled = matplotlib.colors.to_hex(line.get_markerfacecolor()) != "#ffffff"
                        assert filled == (arm == "reinforce" or significant), arm  # the baseline always filled
        drawn[Path(path).name] = seen
        return save(fig, path, rect)

    monkeypatch.setattr(report_module, "_save", record)
    assert report(out) == [out / "curves.png", out / "comparison.png"]
    want = arm_colors(spec.arms)
    assert list(want) == ["grpo", "reinforce"] and sorted(markers) == [
        "grpo",
        "grpo",
        "reinforce",
    ]  # 2 on the left, 1 on the right
    for name in ("curves.png", "comparison.png"):
        assert drawn[name] == {arm: {color} for arm, color in want.items()}, name


# --------------------------------------------------------------------------------------------------
# report


def test_report_dispatches_on_the_folder(run_dir, exp_dir, tmp_path):
    assert report(run_dir) == [run_dir / "dynamics.png"]
    out = copy_experiment(exp_dir, tmp_path / "exp")
    assert report(out) == [out / "curves.png"] and not (out / "comparison.png").exists()
    scores, seeds, _ = load_scores(out)
    (out / "comparison.json").write_text(
        json.dumps({**compare(scores, reps=200, pair_reps=100).to_dict(), "seeds": seeds})
    )
    assert report(out, smooth=2) == [out / "curves.png", out / "comparison.png"]
    assert png_shape(out / "comparison.png")[0] > 0 and no_open_figures()
    (out / "comparison.json").write_text("{not json")
    with pytest.raises(ConfigError, match="comparison.json' is not valid JSON"):
        report(out)
    with pytest.raises(ConfigError) as err:
        report(tmp_path)
    assert str(tmp_path) in str(err.value) and "metrics.jsonl" in str(err.value) and "experiment.yaml" in str(err.value)


def test_report_draws_each_task_of_a_multi_task_experiment(tmp_path):
    spec = ExperimentSpec(
        name="e", seeds=[0, 1], arms={"a": [], "b": []}, tasks={"rev": [], "add": []}, score="reward/mean"
    )
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    for task, arm, seed in [("rev", "a", 0), ("rev", "a", 1), ("rev", "b", 0), ("add", "a", 0)]:
        path = run_path(tmp_path, arm, task, seed) / "metrics.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text(
            "".join(json.dumps({"step": s, "reward/mean": s * (seed + 1), "kl": None}) + "\n" for s in (1, 2, 3))
        )
    assert report(tmp_path) == [tmp_path / "curves-rev.png", tmp_path / "curves-add.png"]
    curves, seeds, _ = _experiment_curves(tmp_path, spec, "add", DYNAMICS_KEYS, 1)
    assert list(curves) == ["reward/mean"] and seeds == {"a": [0]}  # kl is all null: no panel; arm b: no runs
    assert png_shape(tmp_path / "curves-add.png") == (340, 420)


def test_cli_report(run_dir, tmp_path, capsys):
    from rlsdk.cli import main

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "dynamics.png").unlink(missing_ok=True)
    assert main(["report", str(run), "--smooth", "2"]) == 0
    assert capsys.readouterr().out == f"written: {run / 'dynamics.png'}\n" and (run / "dynamics.png").exists()
    assert main(["report", str(tmp_path)]) == 2
    assert "run folder" in capsys.readouterr().err


def test_significant_steps_are_welch_per_step_with_bh():
    """Runs that differ by +5 on steps 1-4 and agree (up to noise) on steps 5-8."""
    rng = np.random.default_rng(0)

    def runs(shift: float) -> list[list[dict]]:
        return [
            [{"step": t, "r": (shift if t <= 4 else 0.0) + float(rng.normal(0, 0.5))} for t in range(1, 9)]
            for _ in range(4)
        ]

    arm, base = runs(5.0), runs(0.0)
    assert significant_steps(arm, base, "r").tolist() == [1, 2, 3, 4]
    # the same decision by hand: one Welch test per step, then Benjamini-Hochberg over the 8 steps
    p = [sps.ttest_ind([r[t]["r"] for r in arm], [r[t]["r"] for r in base], equal_var=False).pvalue for t in range(8)]
    assert significant_steps(arm, base, "r").tolist() == [
        t + 1 for t in range(8) if sps.false_discovery_control(p)[t] < 0.05
    ]
    assert significant_steps(arm[:1], base, "r").size == 0  # one seed: no test
    assert significant_steps(arm, base, "missing").size == 0
