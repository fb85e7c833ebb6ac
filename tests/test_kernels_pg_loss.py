"""The fused policy-gradient loss kernel (``fused_clipped_pg``) against ``clipped_pg``.

On a machine without CUDA the Triton kernel runs under the interpreter (``TRITON_INTERPRET=1``, set
before triton is imported), on tiny odd shapes. Every comparison is with the PyTorch ``clipped_pg``
loss with the same options: loss, gradient w.r.t. the log-probabilities and metrics, in float64 (the
kernel then computes in float64, so they agree to rounding) and in float32.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import rlsdk
import rlsdk.functional
import rlsdk.testing

pytest.importorskip("triton")

from rlsdk_kernels import pg_loss
from rlsdk_kernels.pg_loss import fused_pg_loss
from rlsdk_kernels.plugin import FusedClippedPG

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
AGGS = rlsdk.functional.AGGREGATION_MODES

pytestmark = pytest.mark.skipif(not pg_loss.supports(DEVICE), reason="the Triton kernel cannot run here")


def _batch(rows: int = 5, length: int = 7, seed: int = 0, dtype: torch.dtype = torch.float64) -> rlsdk.TrainBatch:
    """A ragged tiny batch (row 1 empty, row 2 with a hole) in ``dtype`` on ``DEVICE``."""
    batch = rlsdk.testing.make_train_batch(seed, rows=rows, length=length, group_size=2)
    return _cast(batch, dtype)


def _cast(batch: rlsdk.TrainBatch, dtype: torch.dtype) -> rlsdk.TrainBatch:
    changes = {
        f.name: getattr(batch, f.name).to(DEVICE, dtype)
        for f in dataclasses.fields(batch)
        if isinstance(getattr(batch, f.name), torch.Tensor) and getattr(batch, f.name).is_floating_point()
    }
    return dataclasses.replace(batch, **changes)


def _logprobs(batch: rlsdk.TrainBatch, spread: float = 0.3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch.mask.shape, generator=g).to(batch.old_logprobs)
    return (batch.old_logprobs + spread * noise).clamp_max(0.0)


def _run(loss, logprobs: torch.Tensor, batch: rlsdk.TrainBatch):
    lp = logprobs.detach().clone().requires_grad_(True)
    out = loss(lp, batch)
    (grad,) = torch.autograd.grad(out.loss, [lp])
    out.loss = out.loss.detach()
    return out, grad


def _assert_matches(opts: dict, batch: rlsdk.TrainBatch, logprobs: torch.Tensor, rtol: float | None = None) -> None:
    """Fused and PyTorch ``clipped_pg`` give the same loss, gradient and metrics."""
    rtol = rtol or (1e-10 if logprobs.dtype == torch.float64 else 2e-6)
    expected, expected_grad = _run(rlsdk.create("loss", "clipped_pg", **opts), logprobs, batch)
    got, grad = _run(FusedClippedPG(**opts), logprobs, batch)
    assert got.loss.dtype == expected.loss.dtype
    scale = max(float(expected.loss.abs()), 1e-3)
    assert abs(float(got.loss) - float(expected.loss)) <= rtol * scale, (float(got.loss), float(expected.loss))
    gscale = max(float(expected_grad.abs().max()), 1e-6)
    assert float((grad - expected_grad).abs().max()) <= rtol * gscale
    assert (grad[batch.mask <= 0] == 0).all()
    assert list(got.metrics) == list(expected.metrics)
    for key, value in expected.metrics.items():
        assert math.isclose(got.metrics[key], value, rel_tol=10 * rtol, abs_tol=rtol), (key, got.metrics[key], value)


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("dual_clip_c", [None, 1.5])
def test_matches_clipped_pg_every_aggregation(agg: str, dual_clip_c: float | None) -> None:
    batch = _batch()
    opts = {"eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": dual_clip_c, "kl_coef": 0.05, "agg": agg}
    # Spread 0.6 gives clipped tokens on both sides; with c = 1.5 the dual clip is active on some.
    logprobs = _logprobs(batch, spread=0.6)
    _assert_matches(opts, batch, logprobs)
    _assert_matches(opts, _cast(batch, torch.float32), logprobs.float())


def test_dual_clip_and_clipping_are_exercised() -> None:
    """The cases above really hit the clip and the dual clip (else they would test little)."""
    batch = _batch()
    out = FusedClippedPG(eps_low=0.2, eps_high=0.28, dual_clip_c=1.5)(_logprobs(batch, spread=0.6), batch)
    assert out.metrics["clip_frac"] > 0.1
    assert out.metrics["dual_clip_frac"] > 0.0


@pytest.mark.parametrize("estimator", rlsdk.functional.KL_ESTIMATORS)
@pytest.mark.parametrize("clamps", [(20.0, 10.0), (0.3, 0.05), (None, None)])
def test_matches_clipped_pg_every_kl_estimator(estimator: str, clamps: tuple) -> None:
    batch = _batch(seed=3)
    # ref far from lp on some tokens so the (0.3, 0.05) clamps bind.
    batch = dataclasses.replace(batch, ref_logprobs=batch.ref_logprobs + 0.5 * torch.randn_like(batch.ref_logprobs))
    opts = {"kl_coef": 0.3, "kl_estimator": estimator, "kl_input_clamp": clamps[0], "kl_output_clamp": clamps[1]}
    _assert_matches(opts, batch, _logprobs(batch, seed=4), rtol=1e-10)


def test_kl_metric_without_kl_term_and_no_ref() -> None:
    batch = _batch()
    _assert_matches({"kl_coef": 0.0}, batch, _logprobs(batch))  # kl metric reported, no KL in the loss
    no_ref = dataclasses.replace(batch, ref_logprobs=None)
    _assert_matches({"kl_coef": 0.0}, no_ref, _logprobs(batch))
    with pytest.raises(ValueError, match="needs batch.ref_logprobs"):
        FusedClippedPG(kl_coef=0.1)(_logprobs(batch), no_ref)


@pytest.mark.parametrize(
    "opts",
    [
        {"eps_low": 0.1, "eps_high": 0.4},
        {"eps_low": 0.3, "eps_high": 0.0},
        {"eps_low": 0.2, "delta": 1.5},
        {"eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": 3.0, "delta": 2.0, "agg": "seq-mean-token-mean"},
    ],
)
def test_asymmetric_eps_and_delta(opts: dict) -> None:
    batch = _batch(seed=5)
    _assert_matches(opts, batch, _logprobs(batch, spread=1.0, seed=6))


@pytest.mark.parametrize("logratio_clamp", [20.0, 2.0, None])
def test_large_log_ratios(logratio_clamp: float | None) -> None:
    """Log-ratios up to +-40 (float64): the clamp binds, or without it the ratio is huge but finite."""
    batch = _batch(seed=7)
    g = torch.Generator().manual_seed(8)
    lp = batch.old_logprobs + 40.0 * (2 * torch.rand(batch.mask.shape, generator=g, dtype=torch.float64) - 1).to(DEVICE)
    opts = {"logratio_clamp": logratio_clamp, "kl_coef": 0.1, "dual_clip_c": 2.0}
    _assert_matches(opts, batch, lp)
    out, grad = _run(FusedClippedPG(**opts), lp, batch)
    assert math.isfinite(float(out.loss)) and bool(torch.isfinite(grad).all())


def test_nan_and_inf_at_masked_positions_do_not_leak() -> None:
    batch = _batch(seed=9)
    lp = _logprobs(batch)
    masked = batch.mask <= 0
    assert masked.any()
    poison = torch.full_like(lp, float("nan"))
    poison[:, ::2] = float("inf")

    def dirty(t: torch.Tensor) -> torch.Tensor:
        return torch.where(masked, poison, t)

    noisy = dataclasses.replace(
        batch,
        old_logprobs=dirty(batch.old_logprobs),
        ref_logprobs=dirty(batch.ref_logprobs),
        advantages=dirty(batch.advantages),
    )
    opts = {"kl_coef": 0.1, "dual_clip_c": 3.0, "agg": "seq-mean-token-mean"}
    clean, clean_grad = _run(FusedClippedPG(**opts), lp, batch)
    got, grad = _run(FusedClippedPG(**opts), dirty(lp), noisy)
    assert math.isfinite(float(got.loss)) and float(got.loss) == float(clean.loss)
    assert bool(torch.isfinite(grad).all()) and torch.equal(grad, clean_grad)
    assert got.metrics == clean.metrics


@pytest.mark.parametrize("agg", AGGS)
def test_all_zero_mask(agg: str) -> None:
    batch = _batch()
    empty = rlsdk.TrainBatch(
        mask=torch.zeros_like(batch.mask),
        advantages=batch.advantages,
        old_logprobs=torch.full_like(batch.mask, float("nan")),
        ref_logprobs=batch.ref_logprobs,
        rewards=batch.rewards,
        group_ids=batch.group_ids,
    )
    out, grad = _run(FusedClippedPG(kl_coef=0.1, agg=agg), _logprobs(batch), empty)
    assert float(out.loss) == 0.0
    assert (grad == 0).all()
    assert all(v == 0.0 for v in out.metrics.values())


def test_several_blocks_per_row_and_fractional_mask() -> None:
    """T = 37 spans three interpreter blocks of 16; a mask with weights 0.5 weighs tokens like ``aggregate``."""
    batch = _batch(rows=3, length=37, seed=11)
    weights = torch.where(torch.arange(37, device=DEVICE) % 3 == 0, 0.5, 1.0).to(batch.mask)
    mask = batch.mask * weights
    mask[1, 4] = 0.5  # a row whose mask sums to 0.5: seq-mean-token-mean divides it by max(0.5, 1)
    batch = dataclasses.replace(batch, mask=mask, num_tokens=None, num_seqs=None)
    batch = rlsdk.TrainBatch(**{f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)})
    for agg in AGGS:
        _assert_matches({"kl_coef": 0.2, "agg": agg, "dual_clip_c": 2.0}, batch, _logprobs(batch, spread=0.6))


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"kl_coef": 0.1, "agg": "seq-mean-token-mean", "dual_clip_c": 3.0},
        {"kl_coef": 0.05, "kl_estimator": "k2+", "agg": "seq-mean-token-sum"},
        {"entropy_coef": 0.01, "agg": "seq-mean-token-sum-norm", "eps_high": 0.28},
    ],
)
def test_conforms_and_is_micro_batch_invariant(opts: dict) -> None:
    rlsdk.testing.check_loss(FusedClippedPG(**opts), additive_metrics=True)


def test_entropy_bonus_matches() -> None:
    batch = rlsdk.testing.make_train_batch(2, rows=5, length=7, entropy=True)
    opts = {"entropy_coef": 0.02, "kl_coef": 0.1, "agg": "seq-mean-token-mean"}
    lp = _logprobs(batch)
    results = []
    for loss in (rlsdk.create("loss", "clipped_pg", **opts), FusedClippedPG(**opts)):
        ent = batch.entropy.detach().clone().requires_grad_(True)
        lpx = lp.detach().clone().requires_grad_(True)
        out = loss(lpx, dataclasses.replace(batch, entropy=ent))
        results.append((out, *torch.autograd.grad(out.loss, [lpx, ent])))
    (ref, ref_glp, ref_gent), (got, glp, gent) = results
    assert math.isclose(float(got.loss.detach()), float(ref.loss.detach()), rel_tol=1e-6)
    assert torch.allclose(glp, ref_glp, rtol=1e-5, atol=1e-8)
    assert torch.allclose(gent, ref_gent, rtol=1e-6, atol=0)
    assert got.metrics.keys() == ref.metrics.keys() and "entropy" in got.metrics


def test_gradcheck_float64() -> None:
    batch = _batch(seed=13)
    opts = dict(FusedClippedPG(eps_high=0.28, kl_coef=0.1, dual_clip_c=3.0, agg="seq-mean-token-mean").opts)
    lp = _logprobs(batch, spread=0.5, seed=14).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: fused_pg_loss(x, batch, **opts)[0], (lp,), eps=1e-7, atol=1e-7)


def test_options_and_flags() -> None:
    assert FusedClippedPG(kl_coef=0.1).needs_ref_logprobs and not FusedClippedPG().needs_ref_logprobs
    assert FusedClippedPG(entropy_coef=0.01).needs_entropy and not FusedClippedPG().needs_entropy
    assert FusedClippedPG(eps_low=0.1).eps_high == 0.1
    assert not pg_loss.supports("meta")
    with pytest.raises(rlsdk.ConfigError, match="loss.delta"):
        FusedClippedPG(eps_high=0.5, delta=1.2)
    with pytest.raises(rlsdk.ConfigError, match="loss.kl_estimator"):
        FusedClippedPG(kl_estimator="k4")
    with pytest.raises(rlsdk.ConfigError, match="loss.agg"):
        FusedClippedPG(agg="mean")


@pytest.mark.skipif(DEVICE != "cpu", reason="the fallback is for the CPU without the interpreter")
def test_falls_back_to_clipped_pg_without_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    loss = FusedClippedPG(kl_coef=0.1)
    assert not pg_loss.supports("cpu")
    batch = _batch()
    got, grad = _run(loss, _logprobs(batch), batch)
    expected, expected_grad = _run(rlsdk.create("loss", "clipped_pg", kl_coef=0.1), _logprobs(batch), batch)
    assert float(got.loss) == float(expected.loss) and torch.equal(grad, expected_grad)


@pytest.mark.skipif(DEVICE != "cuda", reason="needs a GPU")
def test_real_size_on_gpu() -> None:
    batch = _batch(rows=64, length=4099, seed=21, dtype=torch.float32)
    opts = {"eps_high": 0.28, "kl_coef": 0.04, "dual_clip_c": 3.0, "agg": "seq-mean-token-mean"}
    _assert_matches(opts, batch, _logprobs(batch, spread=0.5), rtol=1e-5)


def test_runs_eagerly_inside_torch_compile(same_under_compile) -> None:
    """``fused_pg_loss`` is a ``torch.compiler.disable`` region: a compiled step around it breaks the
    graph there and gives the eager values and gradients."""
    batch = _batch(seed=13)
    opts = dict(FusedClippedPG(eps_high=0.28, kl_coef=0.1, agg="seq-mean-token-mean").opts)
    same_under_compile(lambda lp: 2 * fused_pg_loss(lp.clamp_max(0.0), batch, **opts)[0] + 1, _logprobs(batch, seed=14))
