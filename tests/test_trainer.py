"""The training loop: run folder, micro-batch invariance, resume, atomic writes, no algorithm branches."""

from __future__ import annotations

import ast
import copy
import dataclasses
import errno
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import rlsdk
from rlsdk.config import load_config
from rlsdk.errors import StorageError
from rlsdk.plugins import get_registry
from rlsdk.provenance.rundir import RunDir, atomic_write_text, read_metrics
from rlsdk.trainer import build_run, sequence_logprobs, train, train_step, trained_logprobs

FAST = ["train.steps=3", "train.prompts_per_step=4", "sampler.n=4", "run.plot=false", "run.progress=false"]
TIMING = {"wall_time", "tokens_per_s", "time/generate", "step_time"}


@pytest.fixture(scope="module")
def registry():
    return get_registry()


def config_for(registry, *overrides):
    return load_config(registry, overrides=[*FAST, *overrides])


def test_run_folder_contents(registry, tmp_path):
    config = config_for(registry, "run.plot=true", "run.checkpoint_every=2")
    summary = train(config, registry, run_dir=tmp_path / "run")
    run = tmp_path / "run"
    assert (run / "config.yaml").exists()
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    expected = {
        "reward/mean",
        "reward/std",
        "loss",
        "kl",
        "entropy",
        "loss/clip_frac",
        "grad_norm",
        "response_length/mean",
        "tokens_per_s",
        "step_time",
        "reward/char_match",
        "reward/exact_match",
    }
    assert expected <= set(rows[0]), expected - set(rows[0])
    assert all(isinstance(v, (int, float)) for r in rows for v in r.values())
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["versions"]["torch"] == torch.__version__
    assert {"root", "data", "sampling", "init"} <= set(manifest["seeds"])
    assert any(p["name"] == "grpo" and p["distribution"] == "rlsdk" for p in manifest["plugins"])
    assert manifest["hardware"]["cpu_count"] >= 1 and "git" in manifest
    assert (run / "reward_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = RunDir(run).latest_checkpoint()
    assert ckpt is not None and ckpt.name == "step_000003.pt" and summary["steps"] == 3
    state = torch.load(ckpt, weights_only=True)  # state dicts only: no arbitrary unpickling
    assert set(state) == {"step", "policy", "reference", "optimizer", "rng"}
    with pytest.raises(rlsdk.ConfigError, match="already holds a run"):
        train(config, registry, run_dir=run)


def _gradients(registry, micro_batches, loss_overrides=()):
    config = config_for(registry, f"train.micro_batches={micro_batches}", *loss_overrides)
    run = build_run(config, registry, "/nonexistent")
    grads = []
    original_step = run.optimizer.step

    def capture():
        grads.append([p.grad.detach().clone() for p in run.policy.parameters()])
        original_step()

    run.optimizer.step = capture
    metrics = train_step(run)
    return grads[0], metrics


@pytest.mark.parametrize(
    "loss",
    [
        (),
        ("algorithm=dr_grpo",),
        ("loss.agg=token-mean", "loss.kl_coef=0.1", "loss.entropy_coef=0.01"),
        ("loss.name=reinforce", "loss.agg=seq-mean-token-sum"),
    ],
)
def test_gradient_is_micro_batch_invariant(registry, loss):
    whole, m1 = _gradients(registry, 1, loss)
    for k in (2, 4):
        split, mk = _gradients(registry, k, loss)
        for a, b in zip(whole, split):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        assert mk["loss"] == pytest.approx(m1["loss"], rel=1e-4, abs=1e-6)
        assert mk["entropy"] == pytest.approx(m1["entropy"], rel=1e-5)


def test_logprobs_match_the_policy_logits(registry):
    config = config_for(registry, "sampler.temperature=0.7")
    run = build_run(config, registry, "/nonexistent")
    seq = torch.tensor([[0, 3, 4, 5, 6], [3, 4, 5, 6, 7]])
    attn = (seq != 0).long()
    lp, ent = sequence_logprobs(run.policy, run.backend, seq, attn, 2, 0.7, with_entropy=True)
    logits = run.policy.hidden_states(seq, attn) @ run.policy.output_weight().T / 0.7
    ref = torch.log_softmax(logits.double(), -1)[:, 2:4].gather(-1, seq[:, 3:, None]).squeeze(-1)
    torch.testing.assert_close(lp.double(), ref, rtol=1e-5, atol=1e-5)
    assert ent.shape == (2, 2) and bool((ent > 0).all())


@pytest.mark.parametrize("trained_rows", ["some", "all", "none"])
def test_trained_logprobs_give_the_backend_only_trained_tokens(trained_rows):
    """Log-probs, entropies and gradients at trained tokens equal the backend's on every token;
    untrained tokens are 0 there and never reach the backend."""
    g = torch.Generator().manual_seed(0)
    hidden, weight = (
        torch.randn(12, 6, generator=g, dtype=torch.float64),
        torch.randn(9, 6, generator=g, dtype=torch.float64),
    )
    targets = torch.randint(0, 9, (12,), generator=g)
    mask = {"some": torch.rand(3, 4, generator=g) > 0.4, "all": torch.ones(3, 4), "none": torch.zeros(3, 4)}[
        trained_rows
    ]
    backend, seen = rlsdk.create("logprob_backend", "torch"), []

    def spy(h, *args, **kwargs):
        seen.append(h.shape[0])
        return backend(h, *args, **kwargs)

    def run(fn, m):
        h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        lp, ent = fn(h, w, targets, m, temperature=0.7, with_entropy=True)
        ((lp * torch.arange(12.0, dtype=lp.dtype)).sum() + ent.sum()).backward()
        return lp.detach(), ent.detach(), h.grad, w.grad

    def full(h, w, y, m, **kw):  # the backend on every token, then 0 where untrained
        out = backend(h, w, y, **kw)
        keep = m.reshape(-1) > 0
        return (torch.where(keep, v, torch.zeros((), dtype=v.dtype)) for v in (out.logprobs, out.entropy))

    got = run(lambda *a, **kw: trained_logprobs(spy, *a, **kw), mask)
    want = run(full, mask)
    for mine, ref in zip(got, want):
        torch.testing.assert_close(mine, ref, rtol=1e-12, atol=1e-12)
    trained = int((mask > 0).sum())
    assert seen == [trained if trained else 12]
    assert bool((got[0][mask.reshape(-1) <= 0] == 0).all())


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_resume_after_a_kill_repeats_the_uninterrupted_run(tmp_path):
    """Kill a training process mid-run (os._exit in a step hook), resume it, compare metrics."""
    killer = tmp_path / "killer.py"
    killer.write_text(
        textwrap.dedent(
            """
            import os
            import rlsdk

            @rlsdk.hookimpl
            def on_step_end(run, step, metrics):
                if step == 5:
                    os._exit(9)
            """
        )
    )
    common = [*FAST[1:], "train.steps=7", "run.checkpoint_every=2"]
    cli = [sys.executable, "-m", "rlsdk.cli", "train", "--no-progress"]
    full = subprocess.run(
        [*cli, *common, "--run-dir", str(tmp_path / "full")], capture_output=True, text=True, timeout=300
    )
    assert full.returncode == 0, full.stderr
    killed = subprocess.run(
        [*cli, *common, "--run-dir", str(tmp_path / "killed"), "--plugin", str(killer)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == 9
    assert len(read_metrics(tmp_path / "killed" / "metrics.jsonl")) == 5
    assert RunDir(tmp_path / "killed").latest_checkpoint().name == "step_000004.pt"
    resumed = subprocess.run([*cli, "--resume", str(tmp_path / "killed")], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a = _strip(read_metrics(tmp_path / "full" / "metrics.jsonl"))
    b = _strip(read_metrics(tmp_path / "killed" / "metrics.jsonl"))
    assert [r["step"] for r in b] == list(range(1, 8))
    assert a == b


def test_resume_in_process_extends_a_finished_run(registry, tmp_path):
    config = config_for(registry, "train.steps=4", "run.checkpoint_every=2")
    train(config, registry, run_dir=tmp_path / "a")
    longer = copy.deepcopy(config)
    longer["train"]["steps"] = 6
    train(longer, registry, run_dir=tmp_path / "a", resume=True)
    train(longer, registry, run_dir=tmp_path / "b")
    assert _strip(read_metrics(tmp_path / "a" / "metrics.jsonl")) == _strip(
        read_metrics(tmp_path / "b" / "metrics.jsonl")
    )
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert [r["from_step"] for r in manifest["resumes"]] == [4]


def test_resume_without_a_checkpoint_starts_over(registry, tmp_path):
    config = config_for(registry, "run.checkpoint_every=0")
    train(config, registry, run_dir=tmp_path / "a")
    for ckpt in (tmp_path / "a" / "checkpoints").glob("step_*.pt"):
        ckpt.unlink()
    (tmp_path / "a" / "manifest.json").unlink()  # killed before the manifest was written
    train(config, registry, run_dir=tmp_path / "a", resume=True)
    train(config, registry, run_dir=tmp_path / "b")
    assert _strip(read_metrics(tmp_path / "a" / "metrics.jsonl")) == _strip(
        read_metrics(tmp_path / "b" / "metrics.jsonl")
    )
    assert (tmp_path / "a" / "manifest.json").exists()


def test_atomic_write_keeps_the_old_file_on_a_crash(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "old\n")

    def crash(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StorageError, match=r"cannot write '.*config\.yaml': No space left on device \(errno 28\)"):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_written_files_have_the_permissions_of_a_plain_open(tmp_path):
    """mkstemp makes 0o600 files; rlsdk's files (results others read) follow the umask like open()."""
    (tmp_path / "plain").write_text("x")
    expected = (tmp_path / "plain").stat().st_mode & 0o777
    atomic_write_text(tmp_path / "config.yaml", "x")
    checkpoint = RunDir(tmp_path).save_checkpoint(1, {"step": 1})
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == expected
    assert checkpoint.stat().st_mode & 0o777 == expected


def test_torn_metrics_line_is_ignored(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "x": 1.0}\n{"step": 2, "x"')
    assert read_metrics(path) == [{"step": 1, "x": 1.0}]


def test_unsafe_checkpoint_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"policy": Evil()}, path)
    with pytest.raises(rlsdk.ConfigError, match="cannot be loaded safely"):
        RunDir.load_checkpoint(path)


def test_trainer_has_no_algorithm_specific_branches(registry):
    """No registered component name appears as a string literal in the training loop."""
    source = Path(sys.modules["rlsdk.trainer"].__file__).read_text()
    literals = {
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    names = set()
    for kind in ("algorithm", "loss", "advantage", "sampler", "reward", "task", "policy"):
        names |= set(registry.names(kind))
    assert not (literals & names), literals & names


def test_learning_rate_schedule():
    from rlsdk.settings import TrainSettings
    from rlsdk.trainer import learning_rate

    cfg = TrainSettings(lr=1.0, warmup_steps=4, steps=14, lr_schedule="cosine", min_lr_ratio=0.1)
    assert [learning_rate(cfg, s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(cfg, 13) == pytest.approx(0.1)
    assert learning_rate(cfg, 8) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 9)))
    values = [learning_rate(cfg, s) for s in range(3, 14)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert learning_rate(dataclasses.replace(cfg, lr_schedule="constant"), 13) == 1.0


def test_micro_batch_loss_reads_the_members_in_order(monkeypatch):
    """The backend's ``loss_from_hidden`` first (None: declined; a backend without it declines by the
    protocol's default), then backend -> loss with ``batch.entropy`` only for a loss that
    ``needs_entropy`` (a loss without the member gets the default, False)."""
    from types import SimpleNamespace

    from rlsdk import trainer

    hidden, targets = torch.randn(6, 4), torch.randint(0, 5, (6,))
    monkeypatch.setattr(trainer, "completion_states", lambda *a: (hidden, targets))
    micro = rlsdk.testing.make_train_batch(0, rows=2, length=3, group_size=1)
    calls = []

    class Backend:
        def __init__(self, fused):
            self.fused = fused

        def __call__(self, h, w, t, *, temperature, with_entropy):
            calls.append(("backend", temperature, with_entropy))
            return rlsdk.LogprobOutput(
                logprobs=torch.zeros(h.shape[0], requires_grad=True), entropy=torch.ones(h.shape[0])
            )

        def loss_from_hidden(self, h, w, t, batch, loss, *, temperature):
            calls.append(("loss_from_hidden", loss.name, temperature))
            if not self.fused:
                return None
            out = rlsdk.LossOutput(loss=torch.tensor(7.0, requires_grad=True), metrics={})
            return rlsdk.HiddenLossOutput(output=out, logprobs=torch.zeros(2, 3), entropy=torch.full((2, 3), 7.0))

    class Loss:
        name, needs_entropy = "plain", True

        def __call__(self, logprobs, batch):
            calls.append(("loss", batch.entropy is not None))
            return rlsdk.LossOutput(loss=logprobs.sum(), metrics={})

    class BareLoss:
        name = "bare"

        def __call__(self, logprobs, batch):
            calls.append(("loss", batch.entropy is not None))
            return rlsdk.LossOutput(loss=logprobs.sum(), metrics={})

    class BareBackend:
        def __call__(self, h, w, t, *, temperature, with_entropy):
            calls.append(("backend", temperature, with_entropy))
            return rlsdk.LogprobOutput(
                logprobs=torch.zeros(h.shape[0], requires_grad=True), entropy=torch.ones(h.shape[0])
            )

    policy = SimpleNamespace(output_weight=lambda: torch.randn(5, 4))

    def run(loss, backend):
        calls.clear()
        out, entropy = trainer.micro_batch_loss(
            SimpleNamespace(policy=policy, loss=loss, backend=backend, label=str), micro, 3, 0.7
        )
        return calls[:], float(out.loss.detach()), float(entropy[0, 0])

    assert run(Loss(), Backend(True)) == ([("loss_from_hidden", "plain", 0.7)], 7.0, 7.0)
    assert run(Loss(), Backend(False)) == (
        [("loss_from_hidden", "plain", 0.7), ("backend", 0.7, True), ("loss", True)],
        0.0,
        1.0,
    )
    assert run(BareLoss(), BareBackend()) == ([("backend", 0.7, True), ("loss", False)], 0.0, 1.0)
