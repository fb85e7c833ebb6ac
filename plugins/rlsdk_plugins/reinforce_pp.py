"""REINFORCE++ advantages and the ``reinforce_pp`` preset.

Hu 2025 ("REINFORCE++"); verl ``reinforce_plus_plus`` / ``reinforce_plus_plus_baseline``, OpenRLHF
``reinforce`` / ``reinforce_baseline``, NeMo RL ``reinforce_plus_plus``.

``reinforce_plus_plus``: token rewards carry the in-reward KL penalty and the outcome on the last valid
token, the discounted return is whitened over every valid token of the batch:

    r_t = -kl_coef * (lp_old_t - lp_ref_t)  +  R_i * [t is the last valid token of i]
    G_t = r_t + gamma * G_{t'}     (t' the next valid token; G = 0 after the last one)
    A   = whiten(G)

``reinforce_plus_plus_baseline`` (verl form): subtract the group mean, broadcast, whiten:

    A[i, t] = whiten(R_i - mu_g) over all valid tokens   (a group of one: mu = 0, as verl)

so long completions weigh more in the batch statistics. whiten is :func:`rlsdk.masked_whiten`:
``"verl"`` W_v(x) = (x - mean) / sqrt(var_unbiased + 1e-8), ``"openrlhf"`` W_o(x) = (x - mean) *
rsqrt(max(var_biased, 1e-8)).

Masked positions inside a completion (multi-turn observation tokens) are skipped by the return: they
neither receive reward nor count as a discount step, and the return carries across them (as verl's
GAE does). verl's REINFORCE++ instead resets the return at every masked position and OpenRLHF discounts
across them; the three agree whenever the valid tokens of each completion are contiguous (right padding).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

import rlsdk
from rlsdk import ConfigError, RolloutBatch
from rlsdk.functional import broadcast_to_tokens, result_dtype
from rlsdk.hookspecs import Register
from rlsdk.validation import check_choice, check_number
from rlsdk_plugins.policy_gradient import ENTROPY_BONUS

__all__ = ["ReinforcePlusPlusAdvantage", "ReinforcePlusPlusBaselineAdvantage", "reinforce_pp_preset"]

WHITEN_STYLES = ("verl", "openrlhf")


def last_valid_token(mask: Tensor) -> Tensor:
    """``[B, T]`` bool, True on the last position of each row where ``mask > 0`` (no True on empty rows)."""
    valid = mask > 0
    remaining = valid.flip(-1).cumsum(-1).flip(-1)  # valid tokens at or after t
    return valid & (remaining == 1)


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """G_t = r_t + gamma * G_{next valid t}, over the valid tokens of each row.

    Args:
        rewards: ``[B, T]`` token rewards (ignored where ``mask`` is 0).
        mask: ``[B, T]`` 1 on valid tokens.
        gamma: Discount per valid token.

    Returns:
        ``[B, T]`` returns; a masked position holds the return of the next valid token (0 after the last).
    """
    valid = mask > 0
    running = rewards.new_zeros(rewards.shape[0])
    returns = torch.empty_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        running = torch.where(valid[:, t], rewards[:, t] + gamma * running, running)
        returns[:, t] = running
    return returns


class ReinforcePlusPlusAdvantage:
    """REINFORCE++ (Hu 2025): whitened discounted return of token rewards with an in-reward KL penalty.

    r_t = -kl_coef * (lp_old_t - lp_ref_t) + R_i on the last valid token; G_t = r_t + gamma * G_{t+1};
    A = masked_whiten(G) over all valid tokens of the batch.

    Args:
        gamma: Discount per token, in [0, 1] (1.0 in verl, OpenRLHF and NeMo RL).
        kl_coef: Coefficient of the k1 KL penalty folded into the token rewards (>= 0; 0 disables it
            and the reference log-probs are not needed). OpenRLHF's ``init_kl_coef`` is 0.01.
        style: Whitening, ``"verl"`` (W_v, default) or ``"openrlhf"`` (W_o).

    Attributes:
        needs_ref_logprobs: True when ``kl_coef > 0``: the trainer must fill ``batch.ref_logprobs``.
    """

    needs_ref_logprobs: bool = False

    def __init__(self, gamma: float = 1.0, kl_coef: float = 0.0, style: str = "verl"):
        self.gamma = check_number(gamma, "advantage.gamma", low=0.0, high=1.0)
        self.kl_coef = check_number(kl_coef, "advantage.kl_coef", low=0.0)
        self.style = check_choice(style, "advantage.style", WHITEN_STYLES)
        self.needs_ref_logprobs = self.kl_coef > 0

    def token_rewards(self, batch: RolloutBatch) -> Tensor:
        """``[B, T]`` float64 token rewards r_t (0 where the mask is 0)."""
        mask = batch.mask
        valid = mask > 0
        r = batch.rewards.detach().to(torch.float64)
        rewards = torch.where(last_valid_token(mask), r[:, None], 0.0)
        if self.kl_coef > 0:
            if batch.old_logprobs is None or batch.ref_logprobs is None:
                missing = "old_logprobs" if batch.old_logprobs is None else "ref_logprobs"
                raise ConfigError(
                    f"advantage 'reinforce_plus_plus' with advantage.kl_coef={self.kl_coef:g} needs batch.{missing}, "
                    "which is None; configure a reference policy, or set advantage.kl_coef=0"
                )
            kl = batch.old_logprobs.detach().to(torch.float64) - batch.ref_logprobs.detach().to(torch.float64)
            rewards = rewards - self.kl_coef * torch.where(valid, kl, 0.0)
        return rewards

    def __call__(self, batch: RolloutBatch) -> Tensor:
        """Advantages ``[B, T]`` of a scored rollout, whitened over its valid tokens."""
        returns = discounted_returns(self.token_rewards(batch), batch.mask, self.gamma)
        mask = batch.mask.to(torch.float64)
        adv = rlsdk.masked_whiten(returns, mask, style=self.style)
        return torch.where(mask > 0, adv, 0.0).to(result_dtype(batch.rewards))


class ReinforcePlusPlusBaselineAdvantage:
    """REINFORCE++ with a group-mean baseline, verl form: A = masked_whiten(R_i - mu_g broadcast to tokens).

    A group of one gets mu = 0 (verl), so its completion keeps its reward before whitening.

    Args:
        style: Whitening, ``"verl"`` (W_v, default) or ``"openrlhf"`` (W_o).
    """

    def __init__(self, style: str = "verl"):
        self.style = check_choice(style, "advantage.style", WHITEN_STYLES)

    def __call__(self, batch: RolloutBatch) -> Tensor:
        """Advantages ``[B, T]`` of a scored rollout, whitened over its valid tokens."""
        r = batch.rewards.detach().to(torch.float64)
        mean, _, size = rlsdk.group_stats(r, batch.group_ids)
        centred = r - torch.where(size > 1, mean, 0.0)
        tokens = broadcast_to_tokens(centred, batch.mask, torch.float64)
        mask = batch.mask.to(torch.float64)
        adv = rlsdk.masked_whiten(tokens, mask, style=self.style)
        return torch.where(mask > 0, adv, 0.0).to(result_dtype(batch.rewards))


def reinforce_pp_preset() -> dict[str, Any]:
    """REINFORCE++-baseline advantages with the clipped surrogate and a token mean (verl's recipe).

    ``entropy_coef`` is the built-in CPU experiment's exploration bonus
    (:data:`~rlsdk_plugins.policy_gradient.ENTROPY_BONUS`), not part of the published recipe: set
    ``loss.entropy_coef=0`` for it. Every option of the advantage estimator and the loss is stated, so
    nothing is inherited from another layer.
    """
    return {
        "advantage": {"name": "reinforce_plus_plus_baseline", "style": "verl"},
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
    register("reinforce_plus_plus", ReinforcePlusPlusAdvantage)
    register("reinforce_plus_plus_baseline", ReinforcePlusPlusBaselineAdvantage)


@rlsdk.hookimpl
def register_algorithms(register: Register) -> None:
    """Register this module's algorithm presets."""
    register("reinforce_pp", reinforce_pp_preset)
