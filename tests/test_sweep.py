"""Hyperparameter search: `rlsdk.research.sweep` and `rlsdk sweep`."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsdk import ConfigError
from rlsdk.cli import main
from rlsdk.config import parse_overrides
from rlsdk.plugins import get_registry
from rlsdk.research.experiment import score_run
from rlsdk.research.sweep import _as_overrides, load_sweep, run_sweep

TINY = [
    "train.steps=2", "train.prompts_per_step=2", "sampler.n=2", "policy.d_model=16", "policy.n_heads=2",
    "run.plot=false", "eval.size=4",
]  # fmt: skip
SPACE = {
    "train.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
    "sampler.temperature": {"low": 0.5, "high": 1.5},
    "sampler.max_new_tokens": {"low": 3, "high": 5},
    "algorithm": ["grpo", "dr_grpo"],
}


def write_sweep(tmp_path: Path, **fields) -> Path:
    spec = {"trials": 3, "seeds": 1, "overrides": TINY, "space": SPACE, "score": "reward/mean", **fields}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_load_sweep_kinds(tmp_path):
    spec = load_sweep(
        write_sweep(tmp_path, space={**SPACE, "train.warmup_steps": {"low": 0, "high": 10, "step": 5}}), trials=7
    )
    kinds = {p.key: (p.kind, p.log, p.step) for p in spec.space}
    assert kinds == {
        "train.lr": ("float", True, None),
        "sampler.temperature": ("float", False, None),
        "sampler.max_new_tokens": ("int", False, None),
        "algorithm": ("choice", False, None),
        "train.warmup_steps": ("int", False, 5),
    }
    assert spec.trials == 7 and spec.seeds == [0] and spec.sampler == "tpe" and spec.direction == "maximize"
    assert spec.trial_overrides({"algorithm": "rloo", "train.lr": 0.5}, 3)[-3:] == [
        "algorithm=rloo",
        "train.lr=0.5",
        "seed=3",
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"space": {}}, "needs a 'space' mapping"),
        (
            {"space": {"train.lr": {"low": 1.0, "high": 0.5}}},
            "space.train.lr needs numbers low < high, got low=1.0 high=0.5",
        ),
        ({"space": {"train.lr": {"low": 0.0, "high": 0.5, "log": True}}}, "log: true, so low must be > 0, got 0.0"),
        (
            {"space": {"train.lr": {"low": 0.1, "high": 0.5, "log": True, "step": 0.1}}},
            "step must be a positive number and cannot go with log",
        ),
        ({"space": {"train.lr": {"low": 0.1}}}, "must be a list of choices or a range"),
        ({"space": {"algorithm": []}}, "space.algorithm lists no choices"),
        ({"sampler": "bayes"}, "sampler must be one of tpe, random, gp, cmaes, got 'bayes'"),
        ({"direction": "max"}, "direction must be maximize or minimize"),
        ({"trial": 3}, "unknown key(s) 'trial'"),
        ({"trials": 0}, "trials must be an integer >= 1, got 0"),
    ],
)
def test_load_sweep_errors(tmp_path, fields, message):
    with pytest.raises(ConfigError) as err:
        load_sweep(write_sweep(tmp_path, **fields))
    assert message in str(err.value)


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.text(
            alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="._-/ {}[],:#'\"!&*"),
            max_size=12,
        ),
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=False, allow_infinity=False, width=64),
        st.booleans(),
        st.none(),
    )
)
def test_overrides_parse_back_to_the_values(value):
    (override,) = _as_overrides({"a.b": value})
    assert parse_overrides([override]) == {"a": {"b": value}}


def test_run_sweep_trains_scores_and_continues(tmp_path):
    registry = get_registry()
    out, lines = tmp_path / "out", []
    summary = run_sweep(load_sweep(write_sweep(tmp_path)), registry, out, log=lines.append)
    lines = [line for line in lines if not line.startswith("  ")]  # without the lines within a (slow) run
    assert summary["finished"] == 3 and len(lines) == 3 and lines[0].startswith("trial 0 (1/3): reward/mean = ")
    assert "; about " in lines[0] and lines[0].endswith(" left)") and "; about " not in lines[2]  # the time left
    for trial in summary["trials"]:
        run_dir = out / "trials" / f"{trial['number']:04d}" / "seed_0"
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert (
            config["train"]["lr"] == trial["params"]["train.lr"] and config["algorithm"] == trial["params"]["algorithm"]
        )
        assert config["sampler"]["max_new_tokens"] == trial["params"]["sampler.max_new_tokens"]
        assert 1e-4 <= trial["params"]["train.lr"] <= 1e-2 and trial["params"]["sampler.max_new_tokens"] in (3, 4, 5)
        assert trial["value"] == pytest.approx(score_run(run_dir, "reward/mean")) and trial["scores"] == [
            trial["value"]
        ]
    assert summary["best"]["value"] == max(t["value"] for t in summary["trials"])
    assert json.loads((out / "sweep.json").read_text()) == json.loads(json.dumps(summary))
    assert "importances" in summary and set(summary["importances"]) <= set(SPACE)

    # Continuing to 5 trials runs two more, at new points (the sampler is not restarted from its seed).
    first = [t["params"] for t in summary["trials"]]
    more = run_sweep(load_sweep(write_sweep(tmp_path), trials=5), registry, out, log=lambda _: None)
    assert more["finished"] == 5 and all(t["params"] not in first for t in more["trials"][3:])

    with pytest.raises(ConfigError, match="holds a study of another spec \\(seeds differ\\)"):
        run_sweep(load_sweep(write_sweep(tmp_path, seeds=2)), registry, out)


def test_a_trial_of_a_dead_process_is_retried(tmp_path):
    registry = get_registry()
    out = tmp_path / "out"
    run_sweep(load_sweep(write_sweep(tmp_path, trials=1)), registry, out, log=lambda _: None)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "study.journal")))
    study = optuna.load_study(study_name="sweep", storage=storage)
    orphan = study.ask({"train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    orphan.set_user_attr("host", socket.gethostname())
    orphan.set_user_attr("pid", 2**22 + 12345)  # above Linux's pid_max: no such process
    alive = study.ask()
    alive.set_user_attr("host", socket.gethostname())
    alive.set_user_attr("pid", os.getpid())
    lines = []
    summary = run_sweep(load_sweep(write_sweep(tmp_path, trials=2)), registry, out, log=lines.append)
    states = {t["number"]: t["state"] for t in summary["trials"]}
    assert states[orphan.number] == "FAIL" and states[alive.number] == "RUNNING"  # a live process's trial is left alone
    assert lines[0] == f"trial {orphan.number}: its process is gone; marked failed, its parameters queued again"
    retried = summary["trials"][-1]
    assert retried["state"] == "COMPLETE" and retried["params"]["train.lr"] == orphan.params["train.lr"]


def test_a_bad_space_fails_before_the_first_trial(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, space={"loss.entropy_coeff": {"low": 0.0, "high": 0.1}}))
    with pytest.raises(ConfigError, match="entropy_coeff"):
        run_sweep(spec, get_registry(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_sweep(tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            ["sweep", str(write_sweep(tmp_path)), "--out", str(out), "--trials", "2", "train.steps=1", "--no-progress"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["finished"] == 2 and "best of 2 finished trial(s):" in printed
    assert "train.steps=1 " + " ".join(summary["best"]["overrides"]) in printed  # the command that trains the best


def test_cli_sweep_without_optuna(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert main(["sweep", str(write_sweep(tmp_path)), "--out", str(tmp_path / "out")]) == 2
    assert "pip install 'optuna>=5,<6'" in capsys.readouterr().err
