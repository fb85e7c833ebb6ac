"""Conformance checks of advantage estimators: :func:`check_advantage`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rlsdk.testing._builders import (
    _close,
    _conform,
    _fail,
    _fields,
    _first_position,
    _max_diff,
    _same,
    _seeded,
    _Snapshot,
    make_rollout_batch,
)

if TYPE_CHECKING:
    from rlsdk.types import RolloutBatch

__all__ = ["check_advantage"]


def check_advantage(estimator: Any, batch: RolloutBatch | None = None, seed: int = 0) -> None:
    """Check that ``estimator`` honours the :class:`rlsdk.AdvantageEstimator` contract.

    ``estimator(batch)`` must return a finite floating tensor shaped like ``batch.mask`` that is
    exactly 0 where the mask is 0, must not change the batch (in place or by reassigning a field),
    must give the same result twice (global RNG seeded with ``seed``), and must not depend on the
    values of ``old_logprobs`` and ``ref_logprobs`` at masked positions.

    Args:
        estimator: The advantage estimator (e.g. ``registry.create("advantage", "my_adv")``).
        batch: The scored rollout to test on; default :func:`make_rollout_batch` (which has
            ``old_logprobs`` and ``ref_logprobs``).
        seed: Seed of the default batch, of the perturbation and of the global RNG during each call.

    Raises:
        AssertionError: ``"advantage <Name>: <property>: <details>"`` for the first property that fails.
    """
    import torch

    _conform("advantage", estimator)
    if batch is None:
        batch = make_rollout_batch(seed)
    snapshot = _Snapshot(_fields(batch))
    with _seeded(seed):
        adv = estimator(batch)
    snapshot.check("advantage", estimator, _fields(batch))
    if not isinstance(adv, torch.Tensor):
        _fail("advantage", estimator, "return type", f"returned {type(adv).__name__}; expected a tensor [B, T]")
    if adv.shape != batch.mask.shape:
        _fail(
            "advantage",
            estimator,
            "shape",
            f"returned shape {tuple(adv.shape)}; expected mask's {tuple(batch.mask.shape)}",
        )
    if not adv.is_floating_point():
        _fail("advantage", estimator, "dtype", f"returned dtype {adv.dtype}; expected a floating dtype")
    if not bool(torch.isfinite(adv).all()):
        bad = ~torch.isfinite(adv)
        _fail("advantage", estimator, "finite", f"value {float(adv[bad][0])} at {_first_position(bad)}")
    masked = batch.mask <= 0
    if bool((adv[masked] != 0).any()):
        bad = masked & (adv != 0)
        _fail(
            "advantage",
            estimator,
            "masked positions",
            f"value {float(adv[bad][0]):.4g} at masked {_first_position(bad)}; advantages must be exactly 0 where "
            "mask is 0",
        )
    with _seeded(seed):
        again = estimator(batch)
    if not (isinstance(again, torch.Tensor) and _same(again, adv)):
        diff = _max_diff(again, adv) if isinstance(again, torch.Tensor) and again.shape == adv.shape else float("nan")
        _fail("advantage", estimator, "deterministic", f"two calls on the same batch differ by up to {diff:.3g}")

    g = torch.Generator().manual_seed(seed + 104729)
    changes = {}
    for name in ("old_logprobs", "ref_logprobs"):
        value = getattr(batch, name)
        if value is not None:
            noise = torch.randn(value.shape, generator=g).to(value) + 0.5
            changes[name] = torch.where(masked, value + noise, value)
    if changes:
        with _seeded(seed):
            perturbed = estimator(batch.replace(**changes))
        if not _close(perturbed, adv, rtol=1e-6, atol=1e-7):
            _fail(
                "advantage",
                estimator,
                "masked positions",
                f"changing {' and '.join(changes)} at masked positions changed the advantages by up to "
                f"{_max_diff(perturbed, adv):.3g}; ignore values where mask is 0",
            )
