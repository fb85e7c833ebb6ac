"""Conformance checks of losses: :func:`check_loss`."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from rlsdk.testing._builders import (
    _close,
    _conform,
    _fail,
    _fields,
    _first_position,
    _label,
    _max_diff,
    _same,
    _seeded,
    _Snapshot,
    make_train_batch,
)

if TYPE_CHECKING:
    from torch import Tensor

    from rlsdk.types import LossOutput, TrainBatch

__all__ = ["check_loss", "MICRO_BATCH_SPLITS"]

#: Micro-batch counts :func:`check_loss` compares against the whole batch.
MICRO_BATCH_SPLITS = (1, 2, 4)


def _current_logprobs(batch: TrainBatch, seed: int) -> Tensor:
    """Log-probabilities of a policy a little off the sampling one: ``old + 0.3 * noise`` (some clipping)."""
    import torch

    g = torch.Generator().manual_seed(seed + 7919)
    noise = torch.randn(batch.old_logprobs.shape, generator=g).to(batch.old_logprobs)
    return (batch.old_logprobs.detach() + 0.3 * noise).clamp_max(0.0)


def _loss_run(
    loss: Any, logprobs: Tensor, batch: TrainBatch, seed: int, watch_inputs: bool = False
) -> tuple[LossOutput, Tensor, Tensor | None]:
    """Call ``loss`` once (global RNG seeded); return its output and the gradients to logprobs and entropy.

    With ``watch_inputs``, fail if the call changed ``logprobs`` or the batch.
    """
    from rlsdk.types import LossOutput

    lp = logprobs.detach().clone().requires_grad_(True)
    snapshot = _Snapshot({"logprobs": lp, **_fields(batch)}) if watch_inputs else None
    with _seeded(seed):
        out = loss(lp, batch)
    if snapshot is not None:
        snapshot.check("loss", loss, {"logprobs": lp, **_fields(batch)})
    if not isinstance(out, LossOutput):
        _fail("loss", loss, "return type", f"returned {type(out).__name__}; return rlsdk.LossOutput(loss, metrics)")
    grad_lp, grad_ent = _loss_grads(loss, out.loss, lp, batch)
    return out, grad_lp, grad_ent


def _loss_grads(loss: Any, value: Any, lp: Tensor, batch: TrainBatch) -> tuple[Tensor, Tensor | None]:
    """Check ``value`` is a finite differentiable scalar; its gradients w.r.t. ``lp`` and ``batch.entropy``."""
    import torch

    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        _fail("loss", loss, "scalar loss", f"LossOutput.loss must be a 0-dim tensor, got {shape}")
    if not value.is_floating_point():
        _fail("loss", loss, "dtype", f"LossOutput.loss has dtype {value.dtype}; expected a floating dtype")
    if not bool(torch.isfinite(value)):
        _fail("loss", loss, "finite loss", f"LossOutput.loss is {float(value.detach())}")
    if not value.requires_grad:
        _fail("loss", loss, "gradient", "LossOutput.loss does not depend on logprobs (no gradient flows to them)")
    entropy = batch.entropy if batch.entropy is not None and batch.entropy.requires_grad else None
    inputs = [lp] if entropy is None else [lp, entropy]
    grads = torch.autograd.grad(value, inputs, allow_unused=True)
    if grads[0] is None:
        _fail("loss", loss, "gradient", "LossOutput.loss does not depend on logprobs (no gradient flows to them)")
    grad_ent = grads[1] if entropy is not None else None
    if entropy is not None and grad_ent is None and getattr(loss, "needs_entropy", False):
        _fail("loss", loss, "gradient", "needs_entropy is True but no gradient flows to batch.entropy")
    return grads[0], grad_ent


def _metric_floats(loss: Any, metrics: Any) -> dict[str, float]:
    """``metrics`` as python floats, after checking each is a finite float or a detached 0-dim float tensor."""
    import torch

    if not isinstance(metrics, dict):
        _fail("loss", loss, "metrics", f"LossOutput.metrics must be a dict, got {type(metrics).__name__}")
    values = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            _fail("loss", loss, "metrics", f"metric name {key!r} is not a string")
        is_tensor = isinstance(value, torch.Tensor)
        if is_tensor and (value.dim() != 0 or not value.is_floating_point() or value.requires_grad):
            _fail(
                "loss",
                loss,
                "metrics",
                f"metric {key!r} is a tensor of shape {tuple(value.shape)}, dtype {value.dtype}, requires_grad "
                f"{value.requires_grad}; a tensor metric must be 0-dim, floating and detached (x.detach())",
            )
        if not is_tensor and (isinstance(value, bool) or not isinstance(value, (int, float))):
            _fail(
                "loss",
                loss,
                "metrics",
                f"metric {key!r} is a {type(value).__name__}; metrics are python floats or detached 0-dim tensors",
            )
        values[key] = float(value)
        if not math.isfinite(values[key]):
            _fail("loss", loss, "metrics", f"metric {key!r} is {values[key]}")
    return values


def _check_loss_output(loss: Any, out: LossOutput, grad_lp: Tensor, grad_ent: Tensor | None, mask: Tensor) -> None:
    """Metrics are finite floats (see :func:`_metric_floats`); gradients are finite and exactly 0 where
    ``mask`` is 0."""
    import torch

    _metric_floats(loss, out.metrics)
    masked = mask <= 0
    for name, grad in (("logprobs", grad_lp), ("batch.entropy", grad_ent)):
        if grad is None:
            continue
        if not bool(torch.isfinite(grad).all()):
            bad = ~torch.isfinite(grad)
            _fail(
                "loss",
                loss,
                "finite gradient",
                f"the gradient w.r.t. {name} is {float(grad[bad][0])} at {_first_position(bad)}",
            )
        if bool((grad[masked] != 0).any()):
            bad = masked & (grad != 0)
            _fail(
                "loss",
                loss,
                "masked positions",
                f"the gradient w.r.t. {name} is {float(grad[bad][0]):.3g} at masked {_first_position(bad)}; "
                "it must be exactly 0 where batch.mask is 0",
            )


def _perturb_masked(batch: TrainBatch, logprobs: Tensor, seed: int) -> tuple[TrainBatch, Tensor]:
    """The batch and logprobs with different finite values at every masked position."""
    import torch

    g = torch.Generator().manual_seed(seed + 104729)
    masked = batch.mask <= 0

    def shift(t: Tensor) -> Tensor:
        noise = torch.randn(t.shape, generator=g).to(t) + 0.5
        return torch.where(masked, t.detach() + noise, t.detach())

    changes: dict[str, Any] = {"advantages": shift(batch.advantages), "old_logprobs": shift(batch.old_logprobs)}
    if batch.ref_logprobs is not None:
        changes["ref_logprobs"] = shift(batch.ref_logprobs)
    if batch.entropy is not None:
        changes["entropy"] = shift(batch.entropy).abs().requires_grad_(batch.entropy.requires_grad)
    return dataclasses.replace(batch, **changes), shift(logprobs).clamp_max(0.0)


def _check_micro_batches(
    loss: Any,
    batch: TrainBatch,
    logprobs: Tensor,
    whole: tuple[LossOutput, Tensor, Tensor | None],
    seed: int,
    additive_metrics: bool,
) -> None:
    """Sum the loss over ``batch.split(k)`` for each k in :data:`MICRO_BATCH_SPLITS`; compare with ``whole``."""
    import torch

    out, grad_lp, grad_ent = whole
    rows = batch.mask.shape[0]
    for k in MICRO_BATCH_SPLITS:
        if k > rows:
            continue
        lp = logprobs.detach().clone().requires_grad_(True)
        total = torch.zeros((), dtype=out.loss.dtype)
        metrics: dict[str, float] = {}
        start = 0
        for micro in batch.split(k):
            stop = start + micro.mask.shape[0]
            with _seeded(seed):
                part = loss(lp[start:stop], micro)
            total = total + part.loss
            for key, value in part.metrics.items():
                metrics[key] = metrics.get(key, 0.0) + float(value)
            start = stop
        g_lp, g_ent = _loss_grads(loss, total, lp, batch)
        hint = "normalise with the batch's global counts (rlsdk.aggregate), never with counts of the micro-batch"
        if not _close(total, out.loss, atol=1e-6):
            _fail(
                "loss",
                loss,
                "micro-batch invariance",
                f"the loss is {float(out.loss.detach()):.7g} on the whole batch but sums to "
                f"{float(total.detach()):.7g} over {k} "
                f"micro-batches (batch.split({k})); {hint}",
            )
        if not _close(g_lp, grad_lp, atol=1e-8):
            _fail(
                "loss",
                loss,
                "micro-batch invariance",
                f"the gradient w.r.t. logprobs differs by up to {_max_diff(g_lp, grad_lp):.3g} between the whole "
                f"batch and {k} micro-batches; {hint}",
            )
        if grad_ent is not None and g_ent is not None and not _close(g_ent, grad_ent, atol=1e-8):
            _fail(
                "loss",
                loss,
                "micro-batch invariance",
                f"the gradient w.r.t. batch.entropy differs by up to {_max_diff(g_ent, grad_ent):.3g} between the "
                f"whole batch and {k} micro-batches; {hint}",
            )
        if additive_metrics:
            for key, value in _metric_floats(loss, out.metrics).items():
                summed = metrics.get(key, 0.0)
                if abs(summed - value) > 1e-6 + 1e-4 * abs(value):
                    _fail(
                        "loss",
                        loss,
                        "micro-batch invariance",
                        f"metric {key!r} is {value:.6g} on the whole batch but sums to {summed:.6g} over {k} "
                        f"micro-batches; the trainer sums metrics over micro-batches, so {hint}",
                    )


def check_loss(loss: Any, batch: TrainBatch | None = None, seed: int = 0, *, additive_metrics: bool = False) -> None:
    """Check that ``loss`` honours the :class:`rlsdk.Loss` contract.

    ``loss(logprobs, batch)`` is called with ``logprobs = old_logprobs + 0.3 * noise`` (seeded, with
    gradient) and checked for:

    - the result: a :class:`rlsdk.LossOutput` holding a finite scalar loss with a floating dtype that
      depends on ``logprobs``, and a dict of finite metrics (python floats or detached 0-dim tensors);
    - gradients: finite, and exactly 0 at masked positions (w.r.t. ``logprobs`` and, when the batch
      has one with gradient, ``batch.entropy``);
    - masks respected: other values at masked positions of ``logprobs``, ``advantages``,
      ``old_logprobs``, ``ref_logprobs`` and ``entropy`` change neither the loss nor the gradient;
    - no in-place change to ``logprobs`` or the batch's tensors, and no reassigned batch field;
    - determinism: a second call (global RNG seeded with ``seed`` each time) gives the same loss,
      gradient and metrics, bit for bit;
    - micro-batch invariance: for ``k`` in 1, 2 and 4 the sum of the losses of ``batch.split(k)``
      (which keeps the global counts) and its gradient equal those of the whole batch (relative
      tolerance 1e-5). With ``additive_metrics`` the metrics must sum the same way.

    A fused kernel that computes the loss straight from hidden states belongs to the logprob backend
    (``loss_from_hidden``), which :func:`check_logprob_backend` checks.

    Args:
        loss: The loss component (e.g. ``registry.create("loss", "my_loss")``).
        batch: The global batch to test on; default :func:`make_train_batch` with ``ref_logprobs``
            when ``loss.needs_ref_logprobs`` and an ``entropy`` with gradient when ``loss.needs_entropy``.
        seed: Seed of the default batch, of ``logprobs`` and of the global RNG during each call.
        additive_metrics: Also require every metric to sum over micro-batches, as the trainer assumes.

    Raises:
        AssertionError: ``"loss <Name>: <property>: <details>"`` for the first property that fails (or
            the message of :func:`rlsdk.kinds.conform` for a member of the wrong type).
        ValueError: ``batch`` lacks a field the loss declares it needs.
    """
    _conform("loss", loss)
    needs_ref = bool(getattr(loss, "needs_ref_logprobs", False))
    needs_entropy = bool(getattr(loss, "needs_entropy", False))
    if batch is None:
        batch = make_train_batch(seed, ref_logprobs=needs_ref, entropy=needs_entropy)
    elif needs_ref and batch.ref_logprobs is None:
        raise ValueError(
            f"check_loss: {_label('loss', loss)} sets needs_ref_logprobs but the batch given has no ref_logprobs"
        )
    elif needs_entropy and batch.entropy is None:
        raise ValueError(f"check_loss: {_label('loss', loss)} sets needs_entropy but the batch given has no entropy")
    logprobs = _current_logprobs(batch, seed)

    # The call itself: result, gradients, inputs untouched.
    out, grad_lp, grad_ent = _loss_run(loss, logprobs, batch, seed, watch_inputs=True)
    _check_loss_output(loss, out, grad_lp, grad_ent, batch.mask)

    # Determinism.
    again, grad_lp2, grad_ent2 = _loss_run(loss, logprobs, batch, seed)
    same = _same(again.loss.detach(), out.loss.detach()) and _same(grad_lp2, grad_lp)
    if not (same and _metric_floats(loss, again.metrics) == _metric_floats(loss, out.metrics)):
        _fail(
            "loss",
            loss,
            "deterministic",
            f"two calls on the same inputs gave loss {float(out.loss.detach()):.9g} and "
            f"{float(again.loss.detach()):.9g} "
            f"(gradient difference {_max_diff(grad_lp2, grad_lp):.3g}, metrics {out.metrics} vs {again.metrics})",
        )
    if grad_ent is not None and grad_ent2 is not None and not _same(grad_ent, grad_ent2):
        _fail(
            "loss",
            loss,
            "deterministic",
            "two calls on the same inputs gave different gradients w.r.t. batch.entropy",
        )

    # Values at masked positions must not matter.
    noisy_batch, noisy_lp = _perturb_masked(batch, logprobs, seed)
    noisy, grad_lp3, _ = _loss_run(loss, noisy_lp, noisy_batch, seed)
    valid = batch.mask > 0
    if not _close(noisy.loss, out.loss, atol=1e-6) or not _close(grad_lp3[valid], grad_lp[valid], atol=1e-8):
        _fail(
            "loss",
            loss,
            "masked positions",
            f"changing the values at masked positions (mask == 0) of logprobs and the batch changed the loss "
            f"from {float(out.loss.detach()):.7g} to {float(noisy.loss.detach()):.7g} (gradient difference "
            f"{_max_diff(grad_lp3[valid], grad_lp[valid]):.3g}); multiply by, or select with, batch.mask",
        )

    _check_micro_batches(loss, batch, logprobs, (out, grad_lp, grad_ent), seed, additive_metrics)
