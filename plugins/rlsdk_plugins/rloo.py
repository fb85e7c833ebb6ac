"""RLOO: REINFORCE with a leave-one-out baseline, and the ``rloo`` preset.

Ahmadian et al. 2024 ("Back to Basics"), Kool et al. 2019; verl ``rloo``, OpenRLHF, NeMo RL (GRPO
estimator with ``use_leave_one_out_baseline``). For completion i of a group of n::

    A_i = R_i - sum_{j != i} R_j / (n - 1) = n / (n - 1) * (R_i - mu_g)

A group of one has no other completion to compare with: A = R (verl). A[i, t] = A_i * mask[i, t].
TRL's ``RLOOTrainer`` also folds a sequence KL into R and may whiten A over the batch; here the KL
belongs to the loss (``loss.kl_coef``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import rlsdk
from rlsdk import RolloutBatch
from rlsdk.functional import broadcast_to_tokens, result_dtype
from rlsdk.hookspecs import Register
from rlsdk_plugins._groups import require_groups
from rlsdk_plugins.policy_gradient import ENTROPY_BONUS

__all__ = ["RLOOAdvantage", "rloo_preset"]


class RLOOAdvantage:
    """Leave-one-out advantage A_i = R_i - mean_{j != i} R_j (A = R for a group of one, as verl).

    Takes no options.
    """

    def scores(self, rewards: Tensor, group_ids: Tensor) -> Tensor:
        """Per-completion advantages ``[B]`` (float64) from ``rewards [B]`` and ``group_ids [B]``."""
        r = rewards.detach().to(torch.float64)
        mean, _, size = rlsdk.group_stats(r, group_ids)
        others = (mean * size - r) / (size - 1).clamp_min(1.0)
        return torch.where(size > 1, r - others, r)

    def __call__(self, batch: RolloutBatch) -> Tensor:
        """Advantages ``[B, T]`` of a scored rollout (``rewards [B]``, ``group_ids [B]``, ``mask [B, T]``)."""
        return broadcast_to_tokens(self.scores(batch.rewards, batch.group_ids), batch.mask, result_dtype(batch.rewards))


def rloo_preset() -> dict[str, Any]:
    """RLOO with the clipped surrogate and a token mean (verl's RLOO recipe; TRL ``RLOOTrainer`` also clips).

    ``entropy_coef`` is the built-in CPU experiment's exploration bonus
    (:data:`~rlsdk_plugins.policy_gradient.ENTROPY_BONUS`), not part of the published recipe: set
    ``loss.entropy_coef=0`` for it. Every option of the advantage estimator and the loss is stated, so
    nothing is inherited from another layer.
    """
    return {
        "advantage": {"name": "rloo"},
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
            "agg": "token-mean",
        },
    }


@rlsdk.hookimpl
def register_advantages(register: Register) -> None:
    """Register this module's advantage estimators."""
    register("rloo", RLOOAdvantage)


@rlsdk.hookimpl
def register_algorithms(register: Register) -> None:
    """Register this module's algorithm presets."""
    register("rloo", rloo_preset)


@rlsdk.hookimpl
def check_config(config: dict[str, Any]) -> None:
    """``rloo``'s baseline comes from the other completions of a prompt: it needs ``sampler.n >= 2``."""
    require_groups(config, "rloo", "subtracts the mean reward of the other completions of the same prompt")
