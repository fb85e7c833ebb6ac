"""The `rlsdk` command line: train, eval, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rlsdk.cli import main
from rlsdk.provenance.rundir import read_metrics

FAST = ["train.steps=2", "train.prompts_per_step=4", "sampler.n=4", "run.plot=false", "--no-progress"]


def test_train_then_eval(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"run: {run}" in out and "reward first" in out
    assert len(read_metrics(run / "metrics.jsonl")) == 2
    assert main(["eval", str(run), "eval.size=10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["eval/examples"] == 10 and result["step"] == 2
    assert 0.0 <= result["eval/char_match"] <= 1.0
    saved = json.loads((run / "eval.json").read_text())
    assert {key: saved[key] for key in result} == result
    assert saved["fingerprint"]["name"] == "step_000002.pt" and saved["eval_config"]["eval"]["size"] == 10


def test_config_file_and_print_config(tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text("algorithm: rloo\ntask:\n  name: sort\ntrain:\n  steps: 3\n")
    assert main(["train", str(path), "train.steps=4", "--print-config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["advantage"]["name"] == "rloo" and config["task"]["name"] == "sort"
    assert config["train"]["steps"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "train.stpes=3"], "did you mean 'steps'"),
        (["train", "loss.name=nope"], "unknown loss 'nope' (from loss.name)"),
        (["train", "notaconfig"], "unexpected argument 'notaconfig'"),
        (["train", "missing.yaml"], "does not exist"),
        (["eval", "/nonexistent/run"], "is not a run folder (it has no config.yaml)"),
    ],
)
def test_errors_exit_2_with_a_message(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith(f"rlsdk {args[0]}: error:")


def test_eval_without_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--run-dir", str(run)]) == 0
    for ckpt in (run / "checkpoints").iterdir():
        ckpt.unlink()
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    assert "no checkpoint" in capsys.readouterr().err


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_examples_resolve(example, capsys, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent)
    assert main(["train", f"examples/{example}", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["steps"] >= 1


def test_jsonl_example_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent)
    run = tmp_path / "run"
    assert main(["train", "examples/jsonl_task.yaml", *FAST, "--run-dir", str(run)]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    (digest,) = manifest["data"].values()
    assert len(digest) == 64  # the data file's SHA-256 is recorded
    assert "reward/numeric_match" in read_metrics(run / "metrics.jsonl")[0]


def test_console_tracker_prints_every_n_steps(tmp_path, capsys):
    fast = [a for a in FAST if a != "train.steps=2"]
    args = ["train", "train.steps=4", "trackers.console.every=2", "trackers.console.keys=[reward/mean,loss]", *fast]
    assert main([*args, "--run-dir", str(tmp_path / "run")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1", "2", "4"]
    assert all("reward/mean=" in line and "loss=" in line and "kl=" not in line for line in lines)
    assert main(["train", "trackers.console.every=0", *fast, "--run-dir", str(tmp_path / "bad")]) == 2
    assert "trackers.console.every must be an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # nothing is written for a config that fails to build
