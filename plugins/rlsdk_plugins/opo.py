"""OPO: on-policy RL with the optimal (length-weighted) reward baseline.

Hao et al. 2025 ("On-Policy RL with Optimal Reward Baseline"); verl ``opo``. With |y_j| the number
of valid tokens of completion j:

    b_g = sum_j |y_j| R_j / sum_j |y_j|    (over the completions of group g)
    A_i = R_i - b_g

so that sum_i |y_i| A_i = 0 within a group: the token-level advantages of a group sum to zero. A group of
one gets b = 0, A = R (verl). A[i, t] = A_i * mask[i, t].
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

__all__ = ["OPOAdvantage"]


class OPOAdvantage:
    """Length-weighted baseline advantage A_i = R_i - sum_j |y_j| R_j / sum_j |y_j| (verl ``opo``).

    A group whose completions are all empty has no valid token, so its advantages are 0 however the
    baseline is defined. Takes no options.
    """

    def scores(self, rewards: Tensor, group_ids: Tensor, lengths: Tensor) -> Tensor:
        """Per-completion advantages ``[B]`` (float64).

        Args:
            rewards: ``[B]`` scalar rewards R_i.
            group_ids: ``[B]`` group of each completion.
            lengths: ``[B]`` valid tokens |y_i| of each completion.
        """
        r = rewards.detach().to(torch.float64)
        lengths = lengths.to(torch.float64)
        mean_len, _, size = rlsdk.group_stats(lengths, group_ids)
        mean_weighted, _, _ = rlsdk.group_stats(lengths * r, group_ids)
        baseline = mean_weighted / mean_len.clamp_min(1e-12)  # = sum |y| R / sum |y|
        baseline = torch.where((size > 1) & (mean_len > 0), baseline, 0.0)
        return r - baseline

    def __call__(self, batch: RolloutBatch) -> Tensor:
        """Advantages ``[B, T]`` of a scored rollout (``rewards [B]``, ``group_ids [B]``, ``mask [B, T]``)."""
        scores = self.scores(batch.rewards, batch.group_ids, batch.completion_lengths)
        return broadcast_to_tokens(scores, batch.mask, result_dtype(batch.rewards))


@rlsdk.hookimpl
def register_advantages(register: Register) -> None:
    """Register this module's advantage estimators."""
    register("opo", OPOAdvantage)


@rlsdk.hookimpl
def check_config(config: dict[str, Any]) -> None:
    """``opo``'s baseline comes from the other completions of a prompt: it needs ``sampler.n >= 2``."""
    require_groups(config, "opo", "subtracts the length-weighted mean reward of each prompt's group")
