"""GRPO-family advantages and the ``grpo`` and ``dr_grpo`` presets.

Group g holds the n completions of one prompt, R_i is the scalar reward of completion i, mu_g and sigma_g
the group's mean and standard deviation (Bessel's correction, n - 1, as in verl, TRL, OpenRLHF and
NeMo RL):

- ``grpo`` (DeepSeekMath; verl ``grpo``):  A_i = (R_i - mu_g) / (sigma_g + eps)
- Dr. GRPO (Liu et al. 2025; ``grpo`` with ``norm_std=False``):  A_i = R_i - mu_g
- ``grpo_passk`` (verl ``grpo_passk``): only the best completion of a group is credited,
  A_best = (R_max - R_second) / (sigma_g + eps), every other A_i = 0.

A scalar advantage is broadcast over the completion: A[i, t] = A_i * mask[i, t] (exactly 0 where the
mask is 0). Statistics are computed in float64; the result is float32 (float64 if the rewards are).

The helpers shared with the other outcome-reward estimators (``rloo``, ``opo``, ``reinforce_pp``)
are :func:`rlsdk.functional.result_dtype` and :func:`rlsdk.functional.broadcast_to_tokens`, and the
group-size check ``require_groups`` of ``rlsdk_plugins._groups``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

import rlsdk
from rlsdk import ConfigError, RolloutBatch
from rlsdk.functional import broadcast_to_tokens, result_dtype
from rlsdk.hookspecs import Register
from rlsdk.validation import check_bool, check_choice, check_number
from rlsdk_plugins._groups import require_groups
from rlsdk_plugins.policy_gradient import ENTROPY_BONUS

__all__ = [
    "GRPOAdvantage",
    "GRPOPassKAdvantage",
    "grpo_preset",
    "dr_grpo_preset",
]

SINGLE_GROUP_MODES = ("reward", "zero")


# --------------------------------------------------------------------------------------------------
# Estimators


class GRPOAdvantage:
    """Group-normalised advantage of GRPO (DeepSeekMath, Shao et al. 2024) and Dr. GRPO.

    A_i = (R_i - mu_g) / (sigma_g + eps), or A_i = R_i - mu_g when ``norm_std=False`` (Dr. GRPO,
    Liu et al. 2025; TRL ``scale_rewards="none"``, verl ``norm_adv_by_std_in_grpo=False``).
    The eps is added to sigma, not to the variance. A[i, t] = A_i * mask[i, t]. Every row of a group
    counts in mu_g and sigma_g, including rows whose mask is empty (as in verl and TRL).

    Args:
        eps: Added to the group std. 1e-6 as verl and NeMo RL; TRL uses 1e-4, OpenRLHF 1e-9.
        norm_std: Divide by ``sigma_g + eps`` (True, GRPO) or only centre (False, Dr. GRPO).
        unbiased: Bessel-corrected std (True: all four reference systems) or population std (False).
        single_group: What a group of one completion gets. ``"reward"`` (verl): mu = 0 and sigma = 1,
            so A = R / (1 + eps) (A = R without std normalisation). ``"zero"`` (NeMo RL): A = 0.
            None (the default): as ``"reward"``, but ``sampler.n=1`` is a config error, since groups
            of one are then more likely a mistake than the intent; name a mode to train on them.
    """

    def __init__(
        self, eps: float = 1e-6, norm_std: bool = True, unbiased: bool = True, single_group: str | None = None
    ) -> None:
        self.eps = check_number(eps, "advantage.eps", low=0.0, low_open=True)
        self.norm_std = check_bool(norm_std, "advantage.norm_std")
        self.unbiased = check_bool(unbiased, "advantage.unbiased")
        if single_group is not None:
            check_choice(single_group, "advantage.single_group", SINGLE_GROUP_MODES)
        self.single_group = single_group or "reward"

    def scores(self, rewards: Tensor, group_ids: Tensor) -> Tensor:
        """Per-completion advantages ``[B]`` (float64) from ``rewards [B]`` and ``group_ids [B]``."""
        r = rewards.detach().to(torch.float64)
        mean, std, size = rlsdk.group_stats(r, group_ids, unbiased=self.unbiased)
        single = size < 2
        if self.single_group == "reward":  # verl: mu = 0, sigma = 1
            mean = torch.where(single, 0.0, mean)
            std = torch.where(single, 1.0, std)
        adv = (r - mean) / (std + self.eps) if self.norm_std else r - mean
        if self.single_group == "zero":  # NeMo RL
            adv = torch.where(single, 0.0, adv)
        return adv

    def __call__(self, batch: RolloutBatch) -> Tensor:
        """Advantages ``[B, T]`` of a scored rollout (``rewards [B]``, ``group_ids [B]``, ``mask [B, T]``)."""
        return broadcast_to_tokens(self.scores(batch.rewards, batch.group_ids), batch.mask, result_dtype(batch.rewards))


class GRPOPassKAdvantage:
    """Pass@k advantage (verl ``grpo_passk``): credit only the best completion of each group.

    A_best = (R_max - R_second) / (sigma_g + eps) (no division when ``norm_std=False``), every other
    completion of the group gets 0. With a tie for the best reward the advantage is 0 anyway; the first
    row of the batch among the tied ones is the "best". Every group needs at least two completions.

    Args:
        eps: Added to the group std (verl 1e-6).
        norm_std: Divide by ``sigma_g + eps``.
        unbiased: Bessel-corrected std (verl: ``torch.std``, unbiased).
    """

    def __init__(self, eps: float = 1e-6, norm_std: bool = True, unbiased: bool = True):
        self.eps = check_number(eps, "advantage.eps", low=0.0, low_open=True)
        self.norm_std = check_bool(norm_std, "advantage.norm_std")
        self.unbiased = check_bool(unbiased, "advantage.unbiased")

    def scores(self, rewards: Tensor, group_ids: Tensor) -> Tensor:
        """Per-completion advantages ``[B]`` (float64); raises if a group has fewer than 2 completions."""
        r = rewards.detach().to(torch.float64)
        _, std, size = rlsdk.group_stats(r, group_ids, unbiased=self.unbiased)
        if bool((size < 2).any()):
            lonely = group_ids[size < 2][0].item()
            raise ConfigError(
                f"advantage 'grpo_passk' needs at least 2 completions per prompt, but group {lonely} has 1; "
                "sample n >= 2 per prompt (sampler.n) or use advantage.name=grpo"
            )
        _, inverse = torch.unique(group_ids, return_inverse=True)
        k = int(inverse.max()) + 1 if inverse.numel() else 0
        rows = torch.arange(r.shape[0], device=r.device)
        neg_inf = r.new_full((k,), -math.inf)
        best = neg_inf.scatter_reduce(0, inverse, r, "amax")
        first_best = torch.full((k,), r.shape[0], device=r.device).scatter_reduce(
            0, inverse, torch.where(r == best[inverse], rows, r.shape[0]), "amin"
        )
        is_best = rows == first_best[inverse]
        second = neg_inf.scatter_reduce(0, inverse, torch.where(is_best, -math.inf, r), "amax")
        gap = best[inverse] - second[inverse]
        if self.norm_std:
            gap = gap / (std + self.eps)
        return torch.where(is_best, gap, 0.0)

    def __call__(self, batch: RolloutBatch) -> Tensor:
        """Advantages ``[B, T]``: non-zero only on the tokens of each group's best completion."""
        return broadcast_to_tokens(self.scores(batch.rewards, batch.group_ids), batch.mask, result_dtype(batch.rewards))


# --------------------------------------------------------------------------------------------------
# Presets


def grpo_preset() -> dict[str, Any]:
    """GRPO as in DeepSeekMath: group-normalised advantage, clipped surrogate, per-sequence mean.

    ``seq-mean-token-mean`` is the original GRPO aggregation (TRL ``loss_type="grpo"``). The KL
    coefficient is 0 (TRL's default beta); DeepSeekMath used 0.04 and verl uses 0.001 with ``k3``:
    set ``loss.kl_coef`` to match them.

    ``entropy_coef`` is the built-in CPU experiment's exploration bonus
    (:data:`~rlsdk_plugins.policy_gradient.ENTROPY_BONUS`), not part of the published recipe: set
    ``loss.entropy_coef=0`` for it. Every option of the advantage estimator and the loss is stated, so
    nothing is inherited from another layer.
    """
    return {
        "advantage": {"name": "grpo", "eps": 1e-6, "norm_std": True, "unbiased": True, "single_group": None},
        "loss": {
            "name": "clipped_pg",
            "eps_low": 0.2,
            "eps_high": 0.2,
            "dual_clip_c": None,
            "delta": None,
            "logratio_clamp": 20.0,
            "kl_coef": 0.0,
            "kl_estimator": "k3",
            "kl_input_clamp": 20.0,
            "kl_output_clamp": 10.0,
            "entropy_coef": ENTROPY_BONUS,
            "agg": "seq-mean-token-mean",
        },
    }


def dr_grpo_preset() -> dict[str, Any]:
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"): no std, constant normaliser.

    A_i = R_i - mu_g, and the loss is summed over tokens and divided by a constant (rows x max length),
    which removes GRPO's length and difficulty biases (verl: ``norm_adv_by_std_in_grpo=False`` with
    ``seq-mean-token-sum-norm``; TRL: ``scale_rewards="none"`` with ``loss_type="dr_grpo"``).

    ``entropy_coef`` is the built-in CPU experiment's exploration bonus
    (:data:`~rlsdk_plugins.policy_gradient.ENTROPY_BONUS`), not part of the published recipe: set
    ``loss.entropy_coef=0`` for it. Every option of the advantage estimator and the loss is stated, so
    nothing is inherited from another layer.
    """
    return {
        "advantage": {"name": "grpo", "eps": 1e-6, "norm_std": False, "unbiased": True, "single_group": None},
        "loss": {
            "name": "clipped_pg",
            "eps_low": 0.2,
            "eps_high": None,
            "dual_clip_c": None,
            "delta": None,
            "logratio_clamp": 20.0,
            "kl_coef": 0.0,
            "kl_estimator": "k3",
            "kl_input_clamp": 20.0,
            "kl_output_clamp": 10.0,
            "entropy_coef": ENTROPY_BONUS,
            "agg": "seq-mean-token-sum-norm",
        },
    }


@rlsdk.hookimpl
def register_advantages(register: Register) -> None:
    """Register this module's advantage estimators."""
    register("grpo", GRPOAdvantage)
    register("grpo_passk", GRPOPassKAdvantage)


@rlsdk.hookimpl
def register_algorithms(register: Register) -> None:
    """Register this module's algorithm presets."""
    register("grpo", grpo_preset)
    register("dr_grpo", dr_grpo_preset)


@rlsdk.hookimpl
def check_config(config: dict[str, Any]) -> None:
    """A group-normalised advantage needs groups of at least two completions (``sampler.n >= 2``).

    ``grpo`` accepts ``sampler.n=1`` when ``advantage.single_group`` names a mode: that option exists
    for groups of one. ``grpo_passk`` always needs two (it compares the best with the second).
    """
    if (config.get("advantage") or {}).get("single_group") is None:
        require_groups(
            config, "grpo", "normalises rewards within each prompt's group", "R/(1+eps), no baseline",
            ", or set advantage.single_group ('reward' or 'zero') to train on groups of one on purpose",
        )  # fmt: skip
    require_groups(
        config, "grpo_passk", "credits the best completion of each prompt's group against the second best", "undefined"
    )
