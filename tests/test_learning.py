"""End-to-end learning: `rlsdk train` with defaults learns by RL alone; an HF policy trains by path."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlsdk.provenance.rundir import read_metrics


@pytest.mark.slow
def test_default_train_learns_the_builtin_task(tmp_path):
    """`rlsdk train` with no arguments: reward rises from random-policy level (<= 0.15) to >= 0.9."""
    proc = subprocess.run(
        [sys.executable, "-m", "rlsdk.cli", "train", "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (run,) = (tmp_path / "runs").iterdir()
    rows = read_metrics(run / "metrics.jsonl")
    first = sum(r["reward/mean"] for r in rows[:3]) / 3
    last = sum(r["reward/mean"] for r in rows[-10:]) / 10
    assert first <= 0.15, first
    assert last >= 0.9, last
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == len(rows)
    # the checkpoint scores the held-out prompts well too
    ev = subprocess.run(
        [sys.executable, "-m", "rlsdk.cli", "eval", str(run), "--json"], capture_output=True, text=True, timeout=300
    )
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["eval/char_match"] >= 0.85


@pytest.mark.slow
def test_hf_policy_trains_by_path(tmp_path):
    transformers = pytest.importorskip("transformers")
    from test_policies import hf_tokenizer, tiny_hf_model

    folder = tmp_path / "model"
    tiny_hf_model("llama").save_pretrained(folder)
    hf_tokenizer().save_pretrained(folder)
    assert transformers is not None
    run = tmp_path / "run"
    args = [
        "train", "policy.name=hf", f"policy.path={folder}", "task.name=addition", "task.digits=1", "task.eval_size=20",
        "train.steps=3", "train.prompts_per_step=4", "sampler.n=4", "sampler.max_new_tokens=3",
        "train.micro_batches=2", "run.plot=false", "--no-progress", "--run-dir", str(run),
    ]  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "rlsdk.cli", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["grad_norm"] > 0 and r["entropy"] > 0 for r in rows)
