"""Advantage :data:`NAME`: reward minus the mean reward of the prompt's group.

The completions of one prompt form a group ``g`` (equal ``group_ids``). With ``R_i`` the reward of
completion ``i`` and ``mu_g`` the mean reward of its group:

    A_i = R_i - mu_g,        A[i, t] = A_i * mask[i, t]

This is REINFORCE with a per-prompt mean baseline: the estimator of Dr. GRPO (Liu et al. 2025), i.e.
GRPO's group-normalised advantage without the division by the group's standard deviation. A group of
one completion gets ``A = 0``. Statistics are computed in float64; the result is float32 (float64 when
the rewards are).

Start your own estimator here: map the scored rollout to ``[B, T]``, zero where the mask is 0.
"""

from __future__ import annotations

import torch

import rlsdk
from rlsdk.hookspecs import Register

__all__ = ["NAME", "MeanBaseline", "register_advantages"]

#: The name this advantage is registered under (config ``advantage.name``), written here only: the
#: preset in ``plugin.py`` (which ``configs/train.yaml`` selects) and the tests read it.
NAME = "{{ cookiecutter.__advantage_name }}"


class MeanBaseline:
    """``A_i = R_i - mean of R over i's group``, broadcast over the completion's tokens.

    Example:
        >>> import torch, rlsdk
        >>> batch = rlsdk.RolloutBatch(
        ...     rewards=torch.tensor([1.0, 0.0, 0.5, 0.5]),
        ...     group_ids=torch.tensor([0, 0, 1, 1]),
        ...     mask=torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1]]),
        ... )
        >>> MeanBaseline()(batch)
        tensor([[ 0.5000,  0.5000],
                [-0.5000,  0.0000],
                [ 0.0000,  0.0000],
                [ 0.0000,  0.0000]])
    """

    def __call__(self, batch: rlsdk.RolloutBatch) -> torch.Tensor:
        """Advantages ``[B, T]`` of a scored rollout (``rewards [B]``, ``group_ids [B]``, ``mask [B, T]``)."""
        rewards = batch.rewards.detach().to(torch.float64)
        mean, _, _ = rlsdk.group_stats(rewards, batch.group_ids)
        scores = rewards - mean  # a group of one is its own mean: A = 0
        dtype = torch.float64 if batch.rewards.dtype == torch.float64 else torch.float32
        zero = torch.zeros((), dtype=torch.float64, device=rewards.device)
        return torch.where(batch.mask > 0, scores[:, None] * batch.mask.to(torch.float64), zero).to(dtype)

    def __repr__(self) -> str:
        return "MeanBaseline()"


@rlsdk.hookimpl
def register_advantages(register: Register) -> None:
    """Register this plugin's advantage estimator (kind ``advantage``)."""
    register(NAME, MeanBaseline)
