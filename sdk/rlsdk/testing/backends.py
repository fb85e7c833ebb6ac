"""Conformance checks of logprob backends: :func:`check_logprob_backend` (with ``loss_from_hidden``)."""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import TYPE_CHECKING, Any

from rlsdk.testing._builders import (
    _builtins,
    _close,
    _conform,
    _fail,
    _fields,
    _label,
    _max_diff,
    _Snapshot,
    make_train_batch,
)
from rlsdk.testing.losses import _metric_floats

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["check_logprob_backend"]


def check_logprob_backend(backend: Any) -> None:
    """Check a logprob backend against a float64 ``log_softmax`` reference on tiny random inputs.

    With ``s = hidden @ weight.T / temperature``: ``logprobs`` must equal ``log_softmax(s)[target]``
    and ``entropy`` (``with_entropy=True``) ``-sum_j p_j log p_j`` (float32, shape ``[N]``; entropy None
    without ``with_entropy``), gradients w.r.t. ``hidden`` and ``weight`` must be finite and match the
    reference's, and the inputs must be unchanged.

    A backend that defines ``loss_from_hidden`` (a fused kernel) is also called with built-in losses
    (``clipped_pg``, plain and with entropy and KL terms) on random hidden states, whole and split in
    two micro-batches: it must return None (no fused path) or an :class:`rlsdk.HiddenLossOutput` whose
    loss, summed over the micro-batches, and its gradients w.r.t. the hidden states and the weight
    match a float64 ``log_softmax`` followed by the loss (relative tolerance 1e-4), with metrics that
    match on the whole batch and ``logprobs`` and ``entropy`` ``[B, T]`` that match the reference where
    the mask is 1.

    Args:
        backend: The backend (e.g. ``registry.create("logprob_backend", "my_backend")``).

    Raises:
        AssertionError: ``"logprob_backend <Name>: <property>: <details>"`` for the first property that fails.
    """
    import torch

    from rlsdk.types import LogprobOutput

    kind = "logprob_backend"
    _conform(kind, backend)
    g = torch.Generator().manual_seed(0)
    n, h, v, temperature = 7, 8, 13, 0.7
    hidden = torch.randn(n, h, generator=g)
    weight = torch.randn(v, h, generator=g)
    targets = torch.randint(0, v, (n,), generator=g)
    weights_lp, weights_ent = torch.randn(n, generator=g), torch.randn(n, generator=g)

    def reference(with_entropy: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        hd, wd = hidden.double().requires_grad_(True), weight.double().requires_grad_(True)
        log_p = torch.log_softmax(hd @ wd.T / temperature, dim=-1)
        lp = log_p.gather(-1, targets[:, None]).squeeze(-1)
        ent = -(log_p.exp() * log_p).sum(-1)
        total = (lp * weights_lp).sum() + ((ent * weights_ent).sum() if with_entropy else 0.0)
        grad_h, grad_w = torch.autograd.grad(total, [hd, wd])
        return lp.detach(), ent.detach(), grad_h, grad_w

    for with_entropy in (False, True):
        hx, wx = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        tx = targets.clone()
        snapshot = _Snapshot({"hidden": hx, "weight": wx, "targets": tx})
        out = backend(hx, wx, tx, temperature=temperature, with_entropy=with_entropy)
        snapshot.check(kind, backend, {"hidden": hx, "weight": wx, "targets": tx})
        if not isinstance(out, LogprobOutput):
            _fail(kind, backend, "return type", f"returned {type(out).__name__}; expected rlsdk.LogprobOutput")
        ref_lp, ref_ent, ref_hd, ref_wd = reference(with_entropy)
        pairs: list[tuple[str, Any, torch.Tensor]] = [("logprobs", out.logprobs, ref_lp)]
        if with_entropy:
            pairs.append(("entropy", out.entropy, ref_ent))
        elif out.entropy is not None:
            _fail(kind, backend, "entropy", "entropy must be None when with_entropy=False")
        for name, value, ref in pairs:
            if not isinstance(value, torch.Tensor) or value.shape != (n,) or value.dtype != torch.float32:
                got = f"{tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else repr(value)
                _fail(kind, backend, "shape", f"{name} is {got}; expected [{n}] float32")
            if not _close(value, ref, rtol=1e-5, atol=1e-5):
                _fail(
                    kind,
                    backend,
                    "values",
                    f"{name} differs from the float64 reference by {_max_diff(value, ref):.3g}",
                )
        total = (out.logprobs * weights_lp).sum()
        if with_entropy and out.entropy is not None:
            total = total + (out.entropy * weights_ent).sum()
        grads = torch.autograd.grad(total, [hx, wx], allow_unused=True)
        for name, grad, ref in (("hidden", grads[0], ref_hd), ("weight", grads[1], ref_wd)):
            if grad is None or not bool(torch.isfinite(grad).all()):
                _fail(kind, backend, "finite gradient", f"the gradient w.r.t. {name} is missing or not finite")
            if not _close(grad, ref, rtol=1e-4, atol=1e-5):
                _fail(
                    kind,
                    backend,
                    "gradient",
                    f"the gradient w.r.t. {name} differs from the reference by {_max_diff(grad, ref):.3g}",
                )
    if inspect.getattr_static(backend, "loss_from_hidden", None) is not None:
        _check_loss_from_hidden(backend)


#: Options of the built-in ``clipped_pg`` loss that :func:`check_logprob_backend` fuses.
FUSED_LOSSES: tuple[dict[str, float], ...] = ({}, {"entropy_coef": 0.01, "kl_coef": 0.1})


def _check_loss_from_hidden(backend: Any) -> None:
    """``backend.loss_from_hidden`` against a float64 reference followed by the loss (see
    :func:`check_logprob_backend`)."""
    import torch

    from rlsdk.kinds import member
    from rlsdk.types import HiddenLossOutput, LossOutput

    kind = "logprob_backend"
    rows, length, h, v, temperature = 4, 5, 8, 13, 0.9
    n = rows * length
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(n, h, generator=g)
    weight = torch.randn(v, h, generator=g)
    targets = torch.randint(0, v, (n,), generator=g)
    batch = make_train_batch(1, rows=rows, length=length, group_size=2)
    with torch.no_grad():  # old / reference log-probs near the current ones, so ratios are not all clipped
        current = torch.log_softmax(hidden @ weight.T / temperature, -1).gather(-1, targets[:, None]).view(rows, length)
    batch = dataclasses.replace(
        batch,
        old_logprobs=current + 0.2 * torch.randn(rows, length, generator=g),
        ref_logprobs=current + 0.2 * torch.randn(rows, length, generator=g),
    )
    for options in FUSED_LOSSES:
        loss = _builtins().create("loss", "clipped_pg", options)
        needs_entropy = bool(member("loss", loss, "needs_entropy"))

        # The reference: float64 log-probs and entropies, then the loss on the whole batch.
        hd, wd = hidden.double().requires_grad_(True), weight.double().requires_grad_(True)
        log_p = torch.log_softmax(hd @ wd.T / temperature, dim=-1)
        ref_lp = log_p.gather(-1, targets[:, None]).view(rows, length)
        ref_ent = -(log_p.exp() * log_p).sum(-1).view(rows, length)
        double = {f: getattr(batch, f).double() for f in ("mask", "advantages", "old_logprobs", "ref_logprobs")}
        ref = loss(ref_lp, dataclasses.replace(batch, **double, entropy=ref_ent if needs_entropy else None))
        ref_hd, ref_wd = torch.autograd.grad(ref.loss, [hd, wd])
        ref_metrics = _metric_floats(loss, ref.metrics)

        for k in (1, 2):
            x, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
            total, start, declined = None, 0, False
            for micro in batch.split(k):
                stop = start + micro.mask.shape[0]
                xs, ts = x[start * length : stop * length], targets[start * length : stop * length].clone()
                snapshot = _Snapshot({"targets": ts, **_fields(micro)})
                out = backend.loss_from_hidden(xs, w, ts, micro, loss, temperature=temperature)
                snapshot.check(kind, backend, {"targets": ts, **_fields(micro)})
                if out is None:
                    declined = True
                    break
                if not isinstance(out, HiddenLossOutput) or not isinstance(out.output, LossOutput):
                    _fail(
                        kind,
                        backend,
                        "loss_from_hidden",
                        f"returned {type(out).__name__}; expected rlsdk.HiddenLossOutput(output=LossOutput, logprobs, "
                        "entropy) or None",
                    )
                valid = micro.mask > 0
                for name, value, expected in (("logprobs", out.logprobs, ref_lp), ("entropy", out.entropy, ref_ent)):
                    expected = expected[start:stop].detach()
                    if not isinstance(value, torch.Tensor) or value.shape != expected.shape:
                        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                        _fail(
                            kind,
                            backend,
                            "loss_from_hidden",
                            f"HiddenLossOutput.{name} is {got}; expected [B, T] = {tuple(expected.shape)}",
                        )
                    if not _close(value.detach()[valid], expected[valid], rtol=1e-5, atol=1e-5):
                        _fail(
                            kind,
                            backend,
                            "loss_from_hidden",
                            f"HiddenLossOutput.{name} differs from the float64 reference by "
                            f"{_max_diff(value[valid], expected[valid]):.3g} where the mask is 1",
                        )
                if k == 1:
                    metrics = _metric_floats(loss, out.output.metrics)
                    if list(metrics) != list(ref_metrics) or any(
                        not math.isclose(metrics[m], ref_metrics[m], rel_tol=1e-4, abs_tol=1e-6) for m in ref_metrics
                    ):
                        _fail(
                            kind,
                            backend,
                            "loss_from_hidden",
                            f"{_label('loss', loss)}{options or ''}: metrics {metrics} differ from the reference's "
                            f"{ref_metrics}",
                        )
                total = out.output.loss if total is None else total + out.output.loss
                start = stop
            if declined or total is None:
                break  # no fused path for this loss
            grads = torch.autograd.grad(total, [x, w], allow_unused=True)
            fx, fw = (gr if gr is not None else torch.zeros_like(t) for gr, t in zip(grads, (x, w)))
            loss_ok = _close(total.detach().double(), ref.loss.detach(), rtol=1e-4, atol=1e-6)
            if not (loss_ok and _close(fx, ref_hd, rtol=1e-4, atol=1e-6) and _close(fw, ref_wd, rtol=1e-4, atol=1e-6)):
                _fail(
                    kind,
                    backend,
                    "loss_from_hidden",
                    f"{_label('loss', loss)}{options or ''} over {k} micro-batch(es): loss_from_hidden gave loss "
                    f"{float(total.detach()):.7g}, the float64 reference then the loss {float(ref.loss.detach()):.7g} "
                    f"(gradient differences: hidden {_max_diff(fx, ref_hd):.3g}, weight {_max_diff(fw, ref_wd):.3g})",
                )
