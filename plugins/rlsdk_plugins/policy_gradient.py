"""Policy-gradient losses: the clipped surrogate family (PPO / DAPO / dual clip / INTELLECT-2) and REINFORCE.

Both losses share one skeleton (:class:`PolicyLoss`): a per-token policy term ``L [B, T]`` aggregated with
the batch's global counts, plus an optional KL-to-reference term and entropy bonus aggregated the same way
(verl, OpenRLHF and NeMo RL reuse the policy's aggregation for both)::

    total = agg(L) + kl_coef * agg(kl_estimate(lp, lp_ref)) - entropy_coef * agg(H)

Masked positions are replaced by 0 with ``torch.where`` *before* any arithmetic, so NaN or inf there (padding
produced by a model, or unscorable samples) never reaches ``exp``, the loss or the gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

import rlsdk
from rlsdk import ConfigError, LossOutput, TrainBatch
from rlsdk.functional import AGGREGATION_MODES, KL_ESTIMATORS, aggregate, kl_estimate
from rlsdk.hookspecs import Register
from rlsdk.validation import check_choice, check_number

__all__ = ["ENTROPY_BONUS", "PolicyLoss", "ClippedPG", "Reinforce", "register_losses"]

#: The entropy bonus of the built-in presets: the exploration the built-in CPU experiment (a
#: one-layer policy on 3-digit ``reverse``) needs to avoid collapsing onto a wrong digit
#: (docs/benchmarks.md). It is not part of the published recipes, which use none.
ENTROPY_BONUS = 0.03


def _zero_masked(values: Tensor, valid: Tensor) -> Tensor:
    """``values`` with masked positions set to 0 (no NaN/inf survives there, not even in the gradient)."""
    return torch.where(valid, values, torch.zeros((), dtype=values.dtype, device=values.device))


def _mean(values: Tensor, batch: TrainBatch) -> Tensor:
    """A metric: ``sum(m * x) / N_tok`` with the global token count, so it sums over micro-batches (a
    detached 0-dim tensor: the trainer reads it once per step, so the loss never waits for the GPU)."""
    return aggregate(values.detach(), batch, "token-mean")


# --------------------------------------------------------------------------------------------------
# Shared skeleton


class PolicyLoss:
    """Base of the policy-gradient losses: ``agg(L) + kl_coef * agg(KL) - entropy_coef * agg(H)``.

    Subclasses implement :meth:`policy_terms`, the per-token policy loss ``L [B, T]``; this class adds the
    regularisers, aggregates everything with one mode and the batch's global counts, and collects metrics.

    - KL to the reference as a loss term (verl ``use_kl_loss``, NeMo RL ``reference_policy_kl_penalty``,
      TRL ``beta``): ``KL_t = kl_estimate(lp, lp_ref, kl_estimator, kl_input_clamp, kl_output_clamp)``.
    - Entropy bonus (verl ``entropy_coeff``, OpenRLHF ``entropy_coef``): ``-entropy_coef * agg(H)`` with
      ``H = batch.entropy`` (filled, with gradient, by the trainer when ``needs_entropy``).

    Metrics are token means over the *global* batch, ``sum(m * x) / N_tok`` whatever ``agg`` is, so they are
    comparable across aggregation modes and sum over micro-batches: ``pg_loss`` (of ``L``), ``kl`` (of the
    estimate, whenever ``batch.ref_logprobs`` is given) and ``entropy`` (whenever ``batch.entropy`` is given).

    Args:
        kl_coef: ``beta >= 0``; 0 disables the term (TRL's default ``beta = 0``; verl uses 0.001 when on).
        kl_estimator: One of :data:`rlsdk.functional.KL_ESTIMATORS` (``k3`` = verl ``low_var_kl``, TRL, NeMo RL).
        kl_input_clamp: Clamp of ``lp - lp_ref`` before the estimator (verl, NeMo RL: 20; None disables).
        kl_output_clamp: Clamp of the estimate (verl, NeMo RL, OpenRLHF: 10; None disables, as TRL).
        entropy_coef: Weight of the entropy bonus; 0 disables it (verl, OpenRLHF default).
        agg: Aggregation mode, one of :data:`rlsdk.functional.AGGREGATION_MODES` (verl default ``token-mean``).

    Attributes:
        needs_ref_logprobs: ``kl_coef > 0``: the trainer must fill ``batch.ref_logprobs``.
        needs_entropy: ``entropy_coef != 0``: the trainer must fill ``batch.entropy``.
    """

    name = "policy_loss"

    def __init__(
        self,
        kl_coef: float = 0.0,
        kl_estimator: str = "k3",
        kl_input_clamp: float | None = 20.0,
        kl_output_clamp: float | None = 10.0,
        entropy_coef: float = 0.0,
        agg: str = "token-mean",
    ) -> None:
        self.kl_coef = check_number(kl_coef, "loss.kl_coef", low=0.0)
        self.kl_estimator = check_choice(kl_estimator, "loss.kl_estimator", KL_ESTIMATORS)
        self.kl_input_clamp = check_number(kl_input_clamp, "loss.kl_input_clamp", low=0.0, low_open=True, none_ok=True)
        self.kl_output_clamp = check_number(
            kl_output_clamp, "loss.kl_output_clamp", low=0.0, low_open=True, none_ok=True
        )
        self.entropy_coef = check_number(entropy_coef, "loss.entropy_coef")
        self.agg = check_choice(agg, "loss.agg", AGGREGATION_MODES)
        self.needs_ref_logprobs = self.kl_coef > 0
        self.needs_entropy = self.entropy_coef != 0

    def policy_terms(
        self, logprobs: Tensor, batch: TrainBatch, valid: Tensor
    ) -> tuple[Tensor, dict[str, float | Tensor]]:
        """The per-token policy loss and its own metrics.

        Args:
            logprobs: ``[B, T]`` current log-probabilities, already 0 where ``valid`` is False.
            batch: The micro-batch (its ``advantages`` and ``old_logprobs`` may hold NaN where masked).
            valid: ``[B, T]`` bool, ``batch.mask > 0``.

        Returns:
            ``(L [B, T], metrics)``; ``L`` must be finite where ``valid`` is False.
        """
        raise NotImplementedError

    def __call__(self, logprobs: Tensor, batch: TrainBatch) -> LossOutput:
        """Loss of one micro-batch, normalised by the global counts of ``batch``.

        Args:
            logprobs: ``[B, T]`` log-probabilities of the sampled tokens under the current policy.
            batch: The micro-batch with the global batch's counts.

        Returns:
            ``LossOutput(loss=scalar, metrics)``; both sum over the micro-batches of a batch.
        """
        if logprobs.shape != batch.mask.shape:
            raise ValueError(
                f"loss {self.name}: logprobs {tuple(logprobs.shape)} must match mask {tuple(batch.mask.shape)}"
            )
        valid = batch.mask > 0
        lp = _zero_masked(logprobs, valid)
        per_token, metrics = self.policy_terms(lp, batch, valid)
        pg_loss = aggregate(per_token, batch, self.agg)
        metrics = {"pg_loss": _mean(per_token, batch), **metrics}
        return LossOutput(loss=pg_loss + self._regularisers(lp, batch, valid, metrics), metrics=metrics)

    def _regularisers(self, lp: Tensor, batch: TrainBatch, valid: Tensor, metrics: dict[str, float | Tensor]) -> Tensor:
        """``kl_coef * agg(KL) - entropy_coef * agg(H)``; adds ``kl`` and ``entropy`` to ``metrics``."""
        total = torch.zeros((), dtype=lp.dtype, device=lp.device)
        if batch.ref_logprobs is not None:
            ref = _zero_masked(batch.ref_logprobs, valid)
            kl = kl_estimate(lp, ref, self.kl_estimator, self.kl_input_clamp, self.kl_output_clamp)
            metrics["kl"] = _mean(kl, batch)
            if self.kl_coef > 0:
                total = total + self.kl_coef * aggregate(kl, batch, self.agg)
        elif self.needs_ref_logprobs:
            raise ValueError(
                f"loss {self.name}: loss.kl_coef = {self.kl_coef:g} needs batch.ref_logprobs, but it is None "
                "(the trainer fills it when loss.needs_ref_logprobs is True; set kl_coef=0 to drop the KL term)"
            )
        return total + self._entropy_term(batch, valid, metrics)

    def _entropy_term(self, batch: TrainBatch, valid: Tensor, metrics: dict[str, float | Tensor]) -> Tensor | float:
        """``-entropy_coef * agg(H)`` (0.0 without the bonus); adds ``entropy`` to ``metrics`` when given."""
        if batch.entropy is None:
            if self.needs_entropy:
                raise ValueError(
                    f"loss {self.name}: loss.entropy_coef = {self.entropy_coef:g} needs batch.entropy, but it is None "
                    "(the trainer fills it when loss.needs_entropy is True; set entropy_coef=0 to drop the bonus)"
                )
            return 0.0
        entropy = _zero_masked(batch.entropy, valid)
        metrics["entropy"] = _mean(entropy, batch)
        return -self.entropy_coef * aggregate(entropy, batch, self.agg) if self.entropy_coef != 0 else 0.0


# --------------------------------------------------------------------------------------------------
# Losses


class ClippedPG(PolicyLoss):
    """Clipped policy gradient: PPO clip, DAPO clip-higher, dual clip and the INTELLECT-2 ``delta`` cap.

    Per valid token, with ``l = lp - lp_old`` (clamped to ``[-logratio_clamp, logratio_clamp]``, verl) and
    ``rho = exp(l)``::

        L = max(-A * min(rho, delta), -A * clip(rho, 1 - eps_low, 1 + eps_high))   # PPO (Schulman 2017)
        L = min(L, -c * A)   where A < 0, when dual_clip_c = c is set             # dual clip (Ye 2020)

    (``min(rho, delta)`` is ``rho`` when ``delta`` is None.)

    - PPO / GRPO: ``eps_low = eps_high = 0.2`` (verl, TRL, OpenRLHF, NeMo RL).
    - DAPO clip-higher: ``eps_high = 0.28`` (verl, TRL ``epsilon_high``, NeMo RL ``ratio_clip_max``).
    - Dual clip: off by default as in OpenRLHF (``dual_clip``) and NeMo RL (``ratio_clip_c=None``); verl has it
      always on with ``c = 3``, so set ``dual_clip_c=3.0`` to match verl.
    - ``delta`` (TRL ``delta``, INTELLECT-2): the unclipped term uses ``min(rho, delta)``; needs
      ``delta > 1 + eps_high``. Off by default (TRL).
    - ``logratio_clamp = 20`` (verl) keeps ``exp`` finite; None disables it (TRL, OpenRLHF, NeMo RL), and a
      huge log-ratio then gives an infinite ratio and NaN gradients.

    Then ``total = agg(L) + kl_coef * agg(KL) - entropy_coef * agg(H)`` (see :class:`PolicyLoss`).

    Metrics (token means over the global batch, see :class:`PolicyLoss`): ``pg_loss``, ``clip_frac``
    (fraction of valid tokens where the clipped term is the larger, verl ``pg_clipfrac``), ``ratio_mean``,
    ``dual_clip_frac`` (where the dual clip is active; only when on, verl ``pg_clipfrac_lower``), ``kl``
    (when ``ref_logprobs`` is given) and ``entropy`` (when ``entropy`` is given).

    Args:
        eps_low: Lower clip range, ``>= 0``.
        eps_high: Upper clip range, ``>= 0``; None means ``eps_low``.
        dual_clip_c: Dual-clip constant ``c > 1``, or None (off).
        delta: Cap of the unclipped ratio, ``> 1 + eps_high``, or None (off).
        logratio_clamp: Clamp of ``l`` before ``exp``, ``> 0``, or None (off).
        kl_coef, kl_estimator, kl_input_clamp, kl_output_clamp, entropy_coef, agg: see :class:`PolicyLoss`.
    """

    name = "clipped_pg"

    def __init__(
        self,
        eps_low: float = 0.2,
        eps_high: float | None = None,
        dual_clip_c: float | None = None,
        delta: float | None = None,
        logratio_clamp: float | None = 20.0,
        kl_coef: float = 0.0,
        kl_estimator: str = "k3",
        kl_input_clamp: float | None = 20.0,
        kl_output_clamp: float | None = 10.0,
        entropy_coef: float = 0.0,
        agg: str = "token-mean",
    ) -> None:
        super().__init__(kl_coef, kl_estimator, kl_input_clamp, kl_output_clamp, entropy_coef, agg)
        self.eps_low = check_number(eps_low, "loss.eps_low", low=0.0)
        eps_high = check_number(eps_high, "loss.eps_high", low=0.0, none_ok=True)
        self.eps_high = self.eps_low if eps_high is None else eps_high
        self.dual_clip_c = check_number(dual_clip_c, "loss.dual_clip_c", low=1.0, low_open=True, none_ok=True)
        self.delta = check_number(delta, "loss.delta", none_ok=True)
        if self.delta is not None and self.delta <= 1.0 + self.eps_high:
            raise ConfigError(f"loss.delta must be > 1 + eps_high = {1.0 + self.eps_high:g} or None, got {delta!r}")
        self.logratio_clamp = check_number(logratio_clamp, "loss.logratio_clamp", low=0.0, low_open=True, none_ok=True)

    def policy_terms(
        self, logprobs: Tensor, batch: TrainBatch, valid: Tensor
    ) -> tuple[Tensor, dict[str, float | Tensor]]:
        """``L [B, T]`` of the clipped surrogate (see the class docstring) and the clip metrics."""
        adv = _zero_masked(batch.advantages, valid)
        logratio = logprobs - _zero_masked(batch.old_logprobs, valid)  # 0 wherever masked
        if self.logratio_clamp is not None:
            logratio = logratio.clamp(-self.logratio_clamp, self.logratio_clamp)
        ratio = torch.exp(logratio)
        unclipped_ratio = ratio if self.delta is None else ratio.clamp(max=self.delta)
        unclipped = -adv * unclipped_ratio
        clipped = -adv * ratio.clamp(1.0 - self.eps_low, 1.0 + self.eps_high)
        loss = torch.maximum(unclipped, clipped)
        metrics = {
            "clip_frac": _mean((clipped > unclipped).to(loss.dtype), batch),
            "ratio_mean": _mean(ratio, batch),
        }
        if self.dual_clip_c is not None:
            floor = -self.dual_clip_c * adv
            dual = (adv < 0) & (loss > floor)
            loss = torch.where(dual, floor, loss)
            metrics["dual_clip_frac"] = _mean(dual.to(loss.dtype), batch)
        return loss, metrics


class Reinforce(PolicyLoss):
    """Plain REINFORCE / GPG: ``L = -A * lp`` (no ratio, no clipping).

    The score-function estimator (Williams 1992); verl ``gpg`` loss (pair it with the ``gpg`` advantage),
    NeMo RL ``disable_ppo_ratio=True``. On-policy (``lp == lp_old``) its gradient equals that of
    :class:`ClippedPG` under the same aggregation.

    Then ``total = agg(L) + kl_coef * agg(KL) - entropy_coef * agg(H)`` (see :class:`PolicyLoss`).
    Metrics: ``pg_loss`` (token mean of ``L``), ``kl`` and ``entropy`` when available.

    Args:
        kl_coef, kl_estimator, kl_input_clamp, kl_output_clamp, entropy_coef, agg: see :class:`PolicyLoss`.
    """

    name = "reinforce"

    def policy_terms(
        self, logprobs: Tensor, batch: TrainBatch, valid: Tensor
    ) -> tuple[Tensor, dict[str, float | Tensor]]:
        """``L = -A * lp`` per token; no extra metrics."""
        return -_zero_masked(batch.advantages, valid) * logprobs, {}


@rlsdk.hookimpl
def register_losses(register: Register) -> None:
    """Register ``clipped_pg`` and ``reinforce``."""
    register("clipped_pg", ClippedPG)
    register("reinforce", Reinforce)
