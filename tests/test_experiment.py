"""Multi-seed experiments and comparisons: `rlsdk.research.experiment`, `.compare`, the CLI commands."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from rlsdk import ConfigError
from rlsdk.cli import main
from rlsdk.config import load_config
from rlsdk.plugins import get_registry
from rlsdk.provenance.rundir import RunDir, read_metrics
from rlsdk.research import stats
from rlsdk.research.compare import compare
from rlsdk.research.experiment import (
    describe_score,
    load_scores,
    load_spec,
    parse_score,
    run_experiment,
    run_path,
    score_run,
)
from rlsdk.trainer import eval_settings, train

TINY = [
    "train.prompts_per_step=2", "sampler.n=2", "policy.d_model=16", "policy.n_heads=2", "run.plot=false",
    "eval.size=4", "run.checkpoint_every=1",
]  # fmt: skip


def write_spec(tmp_path: Path, **fields) -> Path:
    spec = {
        "seeds": 2,
        "overrides": [*TINY, "train.steps=2"],
        "arms": {"grpo": [], "reinforce": ["loss.name=reinforce"]},
        **fields,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# --------------------------------------------------------------------------------------------------
# The experiment file


def test_spec_defaults_and_order(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  steps: 3\n")
    path = tmp_path / "e.yaml"
    path.write_text("config: base.yaml\narms:\n  a: []\n  b: [loss.name=reinforce]\noverrides: [train.lr=0.01]\n")
    spec = load_spec(path, ["train.steps=5"])
    assert spec.name == "e" and spec.seeds == [0, 1, 2] and spec.tasks == {"default": []}
    assert spec.config == str((tmp_path / "base.yaml").resolve()) and spec.score == "eval/reward"
    assert spec.run_overrides("b", "default", 7) == ["train.lr=0.01", "train.steps=5", "loss.name=reinforce", "seed=7"]
    config = load_config(get_registry(), spec.config, spec.run_overrides("b", "default", 7))
    assert config["train"]["steps"] == 5 and config["loss"]["name"] == "reinforce" and config["seed"] == 7
    assert load_spec(path, seeds=[4, 2]).seeds == [4, 2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seeds: 2\n", "has no 'arms'"),
        ("arms: {a: []}\nseed: 2\n", "unknown key(s) 'seed'; valid keys: name, seeds"),
        ("arms: {a: [loss.name]}\n", "arms.a must be a list of key=value strings"),
        ("arms: {'a/b': []}\n", "name 'a/b' is not valid"),
        ("arms: {a: []}\nseeds: [1, 1]\n", "lists a seed twice"),
        ("arms: {a: []}\nseeds: 0\n", "seeds must be a count >= 1"),
        ("arms: {a: []}\nconfig: nowhere.yaml\n", "config 'nowhere.yaml' not found"),
        ("arms: {a: []}\nlast: 0\n", "last must be an integer >= 1"),
        ("arms: []\n", "arms must map names to lists"),
    ],
)
def test_spec_errors_name_the_value(tmp_path, text, message):
    path = tmp_path / "e.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert message in str(err.value)


# --------------------------------------------------------------------------------------------------
# Running, scoring, continuing


def test_run_experiment_trains_scores_and_continues(tmp_path):
    registry = get_registry()
    spec = load_spec(write_spec(tmp_path))
    out, lines = tmp_path / "out", []
    result = run_experiment(spec, registry, out, log=lines.append)
    runs = [line for line in lines if not line.startswith("  ")]  # without the lines within a (slow) run
    assert len(runs) == 4 and runs[0].startswith("[1/4] grpo / default / seed 0: eval/reward = ")
    # each line: the run's time, then the runs left and the time they will take (no estimate after the last)
    assert re.search(r"  \(\S+ (s|min|h); 3 runs left, about \S+ (s|min|h)\)$", runs[0]), runs[0]
    assert re.search(r"  \(\S+ (s|min|h)\)$", runs[3]), runs[3]
    for arm in ("grpo", "reinforce"):
        for seed in (0, 1):
            run = run_path(out, arm, "default", seed)
            config = yaml.safe_load((run / "config.yaml").read_text())
            assert config["seed"] == seed and config["loss"]["name"] == (
                "reinforce" if arm == "reinforce" else "clipped_pg"
            )
            evaluation = json.loads((run / "eval.json").read_text())
            assert evaluation["step"] == 2 and result["scores"][arm]["default"][str(seed)] == evaluation["eval/reward"]
    assert json.loads((out / "scores.json").read_text())["scores"] == result["scores"]
    scores, seeds, _ = load_scores(out)
    assert seeds == {"grpo": [0, 1], "reinforce": [0, 1]} and scores["grpo"].shape == (2, 1)
    assert scores["reinforce"][1, 0] == result["scores"]["reinforce"]["default"]["1"]

    # Again, with one more seed: the finished runs are left alone, only seed 2 trains.
    before = (run_path(out, "grpo", "default", 0) / "metrics.jsonl").stat().st_mtime_ns
    lines.clear()
    run_experiment(load_spec(write_spec(tmp_path, seeds=3)), registry, out, log=lines.append)
    assert (run_path(out, "grpo", "default", 0) / "metrics.jsonl").stat().st_mtime_ns == before
    runs = [line for line in lines if not line.startswith("  ")]
    assert runs[0] == f"reused 4 finished runs from {out / 'runs'}; 2 to train"
    assert [line.split(":")[0] for line in runs[1:]] == [
        "[3/6] grpo / default / seed 2",
        "[6/6] reinforce / default / seed 2",
    ]
    assert "; 1 run left, about " in runs[1] and (run_path(out, "reinforce", "default", 2) / "summary.json").exists()
    assert load_scores(out)[0]["grpo"].shape == (3, 1)
    lines.clear()
    run_experiment(load_spec(write_spec(tmp_path, seeds=3)), registry, out, log=lines.append)
    assert lines == [f"reused 6 finished runs from {out / 'runs'}; nothing to train"]

    # A spec that asks another question is refused, naming what differs.
    with pytest.raises(ConfigError, match="holds runs of another spec \\(arms differ\\)"):
        run_experiment(load_spec(write_spec(tmp_path, arms={"grpo": ["train.lr=0.1"]})), registry, out)


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    """A run stopped after its first step (checkpointed) continues to exactly the uninterrupted run."""
    registry = get_registry()
    spec = load_spec(write_spec(tmp_path, seeds=[3], arms={"grpo": []}, score="reward/mean", last=1))
    out = tmp_path / "out"
    run_dir = run_path(out, "grpo", "default", 3)
    config = load_config(registry, None, spec.run_overrides("grpo", "default", 3))
    train({**config, "train": {**config["train"], "steps": 1}}, registry, run_dir=run_dir, progress=False)
    (run_dir / "summary.json").unlink()  # as if it crashed before finishing
    run_experiment(spec, registry, out, log=lambda _: None)
    resumed = read_metrics(run_dir / "metrics.jsonl")
    fresh = tmp_path / "fresh"
    train(config, registry, run_dir=fresh, progress=False)
    expected = read_metrics(fresh / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [1, 2]
    for key in ("reward/mean", "loss", "kl"):
        assert [r.get(key) for r in resumed] == [r.get(key) for r in expected], key


def test_score_run_training_metric_and_errors(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": i + 1, "reward/mean": float(i), "loss": None} for i in range(5)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert score_run(run, "reward/mean", last=2) == pytest.approx(3.5)
    assert score_run(run, "reward/mean", last=50) == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="'kl' is not in .*its keys: loss, reward/mean"):
        score_run(run, "kl")
    with pytest.raises(ConfigError, match="has no eval.json"):
        score_run(run, "eval/reward")
    calls = []
    (run / "config.yaml").write_text(yaml.safe_dump({"task": {"name": "reverse"}, "eval": {"size": 5}}))
    RunDir(run).save_checkpoint(5, {"step": 5})

    def fake_eval(d):
        calls.append(d)
        config = yaml.safe_load((d / "config.yaml").read_text())
        tie = {"fingerprint": RunDir.fingerprint(RunDir(d).latest_checkpoint()), "eval_config": eval_settings(config)}
        (d / "eval.json").write_text(json.dumps({"step": 5, "eval/reward": 0.25, **tie}))
        return {"step": 5, "eval/reward": 0.25}

    assert score_run(run, "eval/reward", evaluate=fake_eval) == 0.25 and calls == [run]
    assert score_run(run, "eval/reward", evaluate=fake_eval) == 0.25 and len(calls) == 1  # up to date: reused
    RunDir(run).save_checkpoint(6, {"step": 6})  # another checkpoint: evaluated again
    with pytest.raises(ConfigError, match="has an eval.json of another checkpoint or config"):
        score_run(run, "eval/reward")
    assert score_run(run, "eval/reward", evaluate=fake_eval) == 0.25 and len(calls) == 2
    (run / "config.yaml").write_text(yaml.safe_dump({"task": {"name": "reverse"}, "eval": {"size": 50}}))
    assert score_run(run, "eval/reward", evaluate=fake_eval) == 0.25 and len(calls) == 3  # another eval config
    with pytest.raises(ConfigError, match="'eval/exact' is not in .*it holds eval/reward"):
        score_run(run, "eval/exact")


def test_score_summaries(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    values = [0.1, 0.5, 0.95, 0.7, 0.99, 1.0]
    rows = [{"step": i + 1, "r": v, "x": None} for i, v in enumerate(values)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert score_run(run, "auc(r)") == pytest.approx(sum(values) / 6)
    assert score_run(run, "steps_to(r, 0.9)", last=1) == 3.0  # the first step at 0.9 or above
    assert score_run(run, "steps_to(r, 0.9)", last=2) == 6.0  # trailing means: .1 .3 .725 .825 .845 .995
    assert score_run(run, "steps_to(r,2)") == 7.0  # never: last step + 1
    assert parse_score("steps_to(reward/mean, 1e-1)") == ("steps_to", "reward/mean", 0.1)
    assert parse_score("auc( kl )") == ("auc", "kl", None) and parse_score("eval/reward") == (
        "eval",
        "eval/reward",
        None,
    )
    for bad, message in [
        ("steps_to(r)", "needs a threshold"),
        ("auc(r, 1)", "auc takes none"),
        ("max(r)", "is not valid"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            score_run(run, bad)
    assert "reaches 0.9 (lower is better" in describe_score("steps_to(r, 0.9)", 20)
    spec = write_spec(tmp_path, score="steps_to(reward/mean)")
    with pytest.raises(ConfigError, match="experiment file .*: score 'steps_to\\(reward/mean\\)'"):
        load_spec(spec)


def test_load_scores_keeps_seeds_finished_on_every_task(tmp_path):
    spec = load_spec(
        write_spec(tmp_path, tasks={"rev": [], "sort": ["task.name=sort"]}, arms={"a": []}, score="reward/mean")
    )
    out = tmp_path / "out"
    run_experiment(spec, get_registry(), out, log=lambda _: None)
    scores, seeds, _ = load_scores(out)
    assert scores["a"].shape == (2, 2)
    shutil.rmtree(run_path(out, "a", "sort", 1))
    scores, seeds, _ = load_scores(out)
    assert scores["a"].shape == (1, 2) and seeds["a"] == [0]
    rescored, _, _ = load_scores(out, score="loss", last=1)
    want = read_metrics(run_path(out, "a", "rev", 0) / "metrics.jsonl")[-1]["loss"]
    assert rescored["a"][0, 0] == pytest.approx(want)
    shutil.rmtree(run_path(out, "a", "sort", 0))
    with pytest.raises(ConfigError, match="arm 'a' .* has no seed finished on every task"):
        load_scores(out)
    with pytest.raises(ConfigError, match="not an experiment folder"):
        load_scores(tmp_path)


# --------------------------------------------------------------------------------------------------
# compare


def _arms(rng, shift=0.0):
    base = rng.normal(0.5, 0.1, size=(6, 2))
    return {"base": base, "same": base.copy(), "better": base + 1.0 + shift, "noisy": rng.normal(0.5, 0.1, size=(4, 2))}


def test_compare_values_agree_with_stats():
    arms = _arms(np.random.default_rng(0))
    result = compare(arms, reps=500, pair_reps=300)
    rows = {r.arm: r for r in result.arms}
    assert [r.arm for r in compare(arms, "better", reps=10, pair_reps=10).arms] == ["better", "base", "same", "noisy"]
    assert result.baseline == "base" and rows["base"].diff is None and rows["base"].welch is None
    assert rows["base"].value.point == pytest.approx(stats.iqm(arms["base"]))
    better = rows["better"]
    assert better.diff.point == pytest.approx(stats.iqm(arms["better"]) - stats.iqm(arms["base"]))
    assert better.p_improve.point == 1.0 and better.p_improve.low == 1.0 and better.significant
    assert rows["same"].p_improve.point == 0.5 and rows["same"].diff.point == 0.0 and not rows["same"].significant
    raw = [rows[a].welch.p_value for a in ("same", "better", "noisy")]
    assert [rows[a].p_adjusted for a in ("same", "better", "noisy")] == pytest.approx(stats.holm(raw))
    assert rows["noisy"].mde == pytest.approx(stats.min_detectable_effect(4))
    xs, ys = arms["noisy"].mean(axis=1), arms["base"].mean(axis=1)
    assert rows["noisy"].mde_score == pytest.approx(rows["noisy"].mde * np.sqrt((xs.var(ddof=1) + ys.var(ddof=1)) / 2))
    table = result.to_markdown()
    assert "| **base** (baseline) | 6 |" in table and "Holm-corrected over 3 test(s)" in table


def test_compare_is_reproducible_per_arm():
    arms = _arms(np.random.default_rng(1))
    one = compare(arms, reps=400, pair_reps=200, seed=3)
    assert one.to_dict() == compare(arms, reps=400, pair_reps=200, seed=3).to_dict()
    fewer = compare({k: arms[k] for k in ("base", "noisy")}, reps=400, pair_reps=200, seed=3)
    assert fewer.arms[1].value == one.arms[3].value and fewer.arms[1].p_improve == one.arms[3].p_improve
    # another seed, other resamples (a few tries: with 4 runs the bootstrap distribution has large atoms)
    assert any(compare(arms, reps=400, pair_reps=200, seed=s).arms[3].value != one.arms[3].value for s in range(4, 8))


def test_compare_json_is_strict():
    """Constant arms: Welch's t is infinite; comparison.json must still be strict JSON."""
    result = compare({"a": [0.0, 0.0], "b": [1.0, 1.0]}, reps=10, pair_reps=10)
    assert result.arms[1].welch.statistic == float("inf") and result.arms[1].welch.p_value == 0.0
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["arms"][1]["welch"]["statistic"] is None and data["arms"][1]["significant"] is True


def test_compare_single_seed_arm_gets_no_test():
    result = compare({"a": [0.1, 0.2, 0.3], "b": [0.5]}, reps=100, pair_reps=100)
    assert result.arms[1].welch is None and result.arms[1].mde is None and "no test" in result.to_markdown()


@pytest.mark.parametrize(
    ("kwargs", "scores", "message"),
    [
        ({"metric": "iqr"}, {"a": [1.0, 2.0]}, "metric 'iqr' is not known (did you mean 'iqm'?)"),
        ({"baseline": "bse"}, {"base": [1.0, 2.0]}, "baseline 'bse' is not an arm (did you mean 'base'?)"),
        ({}, {"a": np.ones((3, 2)), "b": np.ones((3, 1))}, "numbers of tasks per arm: {'a': 2, 'b': 1}"),
        ({}, {"a": [1.0, float("nan")]}, "arm 'a'"),
        ({}, {}, "at least one arm"),
    ],
)
def test_compare_errors(kwargs, scores, message):
    with pytest.raises(ConfigError) as err:
        compare(scores, reps=10, pair_reps=10, **kwargs)
    assert message in str(err.value)


# --------------------------------------------------------------------------------------------------
# The commands


def test_cli_experiment_then_compare(tmp_path, capsys):
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    assert main(["experiment", str(spec), "train.steps=1", "--out", str(out), "--seeds", "2", "--reps", "200"]) == 0
    printed = capsys.readouterr().out
    assert "2 arm(s) x 1 task(s) x 2 seed(s) = 4 runs" in printed and "| reinforce | 2 |" in printed
    assert yaml.safe_load((out / "experiment.yaml").read_text())["overrides"][-1] == "train.steps=1"
    saved = json.loads((out / "comparison.json").read_text())
    assert (
        saved["baseline"] == "grpo" and saved["seeds"] == {"grpo": [0, 1], "reinforce": [0, 1]} and saved["reps"] == 200
    )
    assert (out / "comparison.md").read_text().startswith("# exp\n")
    assert f"{out / 'curves.png'}, {out / 'comparison.png'}" in printed  # the plots of `rlsdk report`

    assert (
        main(
            [
                "compare",
                str(out),
                "--baseline",
                "reinforce",
                "--score",
                "reward/mean",
                "--last",
                "1",
                "--json",
                "--reps",
                "100",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["baseline"] == "reinforce" and data["score"] == "reward/mean" and data["metric"] == "iqm"
    want = [read_metrics(run_path(out, "grpo", "default", s) / "metrics.jsonl")[-1]["reward/mean"] for s in (0, 1)]
    assert data["arms"][1]["arm"] == "grpo" and data["arms"][1]["value"]["point"] == pytest.approx(np.mean(want))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "{tmp}"], "is not an experiment folder"),
        (["compare", "{tmp}", "--last", "3"], "--last only applies with --score"),
        (["experiment", "{tmp}/none.yaml"], "does not exist"),
        (["experiment", "{spec}", "--seeds", "a,b"], "--seeds 'a,b'"),
    ],
)
def test_cli_errors(tmp_path, capsys, args, message):
    spec = write_spec(tmp_path)
    args = [a.format(tmp=tmp_path, spec=spec) for a in args]
    assert main(args) == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Ablations and paired comparisons


def test_ablation_spec_builds_arms_from_the_full_method(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(
        "full: [loss.kl_coef=0.04]\nablations:\n  no_kl: [loss.kl_coef=0]\n  no_ent: [loss.entropy_coef=0]\n"
    )
    spec = load_spec(path)
    assert spec.arms == {
        "full": ["loss.kl_coef=0.04"],
        "no_kl": ["loss.kl_coef=0.04", "loss.kl_coef=0"],
        "no_ent": ["loss.kl_coef=0.04", "loss.entropy_coef=0"],
    }
    assert spec.paired is True
    config = load_config(get_registry(), None, spec.run_overrides("no_kl", "default", 0))
    assert config["loss"]["kl_coef"] == 0  # the ablation's change comes after the full method's
    for text, message in [
        ("arms: {a: []}\nfull: []\nablations: {b: []}\n", "has 'arms' and 'full'/'ablations'"),
        ("full: []\nablations: {full: []}\n", "'full' names the full method"),
        ("full: []\n", "ablations must map names"),
        ("arms: {a: []}\npaired: yes please\n", "paired must be true or false"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_spec(path)


def _shared_seed_effect(seed: int = 0, n: int = 8):
    """Scores whose seed-to-seed spread (sd 1) dwarfs a consistent +0.3 of arm b over arm a on every seed."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 1.0, size=n)
    return base, base + 0.3 + rng.normal(0.0, 0.02, size=n)


def test_paired_comparison_finds_what_welch_misses():
    a, b = _shared_seed_effect()
    welch = compare({"a": a, "b": b}, reps=200, pair_reps=200).arms[1]
    paired = compare({"a": a, "b": b}, reps=200, pair_reps=200, paired=True).arms[1]
    assert welch.welch.test == "welch" and not welch.significant
    assert paired.welch.test == "paired-t" and paired.significant and paired.pairs == 8
    assert paired.welch.p_value == pytest.approx(stats.paired_t_test(b, a).p_value)
    assert paired.diff.low > 0.25 and welch.diff.low < 0  # pairs resampled together: a narrow interval
    assert paired.mde == pytest.approx(stats.min_detectable_effect(8, paired=True))
    assert paired.mde_score == pytest.approx(paired.mde * np.std(b - a, ddof=1))
    assert "paired t p (Holm)" in compare({"a": a, "b": b}, reps=10, pair_reps=10, paired=True).to_markdown()


def test_paired_comparison_pairs_rows_by_seed():
    a, b = _shared_seed_effect()
    # b lacks seed 3 and lists its rows in another order: pairing must follow the seeds, not the rows
    order = [7, 6, 5, 4, 2, 1, 0]
    result = compare(
        {"a": a, "b": b[order]}, reps=10, pair_reps=10, paired=True, seeds={"a": list(range(8)), "b": order}
    ).arms[1]
    common = [0, 1, 2, 4, 5, 6, 7]
    assert result.pairs == 7 and result.welch.p_value == pytest.approx(
        stats.paired_t_test(b[common], a[common]).p_value
    )
    with pytest.raises(ConfigError, match="needs equal numbers of runs, or the seeds of each run"):
        compare({"a": a, "b": b[:5]}, reps=10, pair_reps=10, paired=True)
    with pytest.raises(ConfigError, match="share no seed"):
        compare({"a": a[:2], "b": b[:2]}, reps=10, pair_reps=10, paired=True, seeds={"a": [0, 1], "b": [2, 3]})
    with pytest.raises(ConfigError, match="one seed per run"):
        compare({"a": a, "b": b}, reps=10, pair_reps=10, paired=True, seeds={"a": [0], "b": list(range(8))})


def test_cli_ablate(tmp_path, capsys):
    path = tmp_path / "abl.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "seeds": 2,
                "overrides": [*TINY, "train.steps=1"],
                "full": [],
                "ablations": {"reinforce": ["loss.name=reinforce"]},
                "score": "reward/mean",
            }
        )
    )
    out = tmp_path / "out"
    assert main(["ablate", str(path), "--out", str(out), "--reps", "100", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "[1/4] full / default / seed 0: reward/mean = " in printed and "3 runs left, about " in printed
    assert "| **full** (baseline) | 2 |" in printed and "paired t p (Holm)" in printed
    assert json.loads((out / "comparison.json").read_text())["paired"] is True
    assert main(["compare", str(out), "--no-paired", "--json", "--reps", "100"]) == 0
    assert json.loads(capsys.readouterr().out)["paired"] is False
    assert main(["ablate", str(write_spec(tmp_path)), "--out", str(tmp_path / "x")]) == 2
    assert "lists arms, not an ablation" in capsys.readouterr().err
