"""Loss :data:`NAME`: REINFORCE with a scale factor.

The policy-gradient loss of REINFORCE (Williams 1992) on per-token advantages, multiplied by a
constant. With ``lp[i, t]`` the log-probability of token ``t`` of completion ``i`` under the current
policy, ``A[i, t]`` its advantage and ``m[i, t]`` the mask:

    L = scale * agg( -A[i, t] * lp[i, t] )

where ``agg`` is one of rlsdk's aggregation modes (``rlsdk.aggregate``), computed with the *global*
counts of the batch. That is what makes the loss correct under micro-batching: the trainer sums the
losses of the micro-batches of a batch, and because every micro-batch divides by the counts of the
whole batch, the sum equals the loss (and gradient) of the whole batch. Its gradient is
``-scale * agg(A * grad lp)``, the REINFORCE estimator; ``scale`` only rescales the step (with Adam,
mostly the effective learning rate at the start).

Start your own loss here: change the per-token term, keep ``rlsdk.aggregate`` for the reduction.
Compare it with GRPO's ``clipped_pg`` with ``rlsdk train configs/train.yaml`` and
``rlsdk train configs/train.yaml loss.name=clipped_pg``.
"""

from __future__ import annotations

import torch

import rlsdk
from rlsdk.functional import AGGREGATION_MODES
from rlsdk.hookspecs import Register
from rlsdk.validation import check_choice, check_number

__all__ = ["NAME", "ScaledReinforce", "register_losses"]

#: The name this loss is registered under (config ``loss.name``), written here only: the
#: preset in ``plugin.py`` (which ``configs/train.yaml`` selects) and the tests read it.
NAME = "{{ cookiecutter.__loss_name }}"


class ScaledReinforce:
    """``L = scale * agg(-A * lp)``: REINFORCE, scaled, aggregated with the batch's global counts.

    Args:
        scale: Positive factor multiplying the loss (config ``loss.scale``).
        agg: Aggregation mode, one of ``rlsdk.functional.AGGREGATION_MODES`` (config ``loss.agg``).

    Example:
        >>> import torch, rlsdk
        >>> batch = rlsdk.TrainBatch(
        ...     mask=torch.tensor([[1.0, 1.0], [1.0, 0.0]]),
        ...     advantages=torch.tensor([[1.0, 1.0], [-1.0, 0.0]]),
        ...     old_logprobs=torch.zeros(2, 2),
        ...     rewards=torch.tensor([1.0, 0.0]),
        ...     group_ids=torch.tensor([0, 0]),
        ... )
        >>> out = ScaledReinforce(scale=2.0)(torch.full((2, 2), -0.5), batch)
        >>> round(float(out.loss), 4)  # 2 * (0.5 + 0.5 - 0.5) / 3 tokens
        0.3333
    """

    def __init__(self, scale: float = 1.0, agg: str = "token-mean") -> None:
        self.scale = check_number(scale, "loss.scale", low=0.0, low_open=True)
        self.agg = check_choice(agg, "loss.agg", AGGREGATION_MODES)

    def __call__(self, logprobs: torch.Tensor, batch: rlsdk.TrainBatch) -> rlsdk.LossOutput:
        """The loss of ``logprobs [B, T]`` (current policy, with gradient) on ``batch``.

        Args:
            logprobs: ``[B, T]`` log-probabilities of the completion tokens.
            batch: The micro-batch, with ``mask``, ``advantages`` and the global counts.

        Returns:
            The scalar loss and one metric, ``advantage``: ``agg(A)``, normalised like the loss so
            that its sum over micro-batches is the value of the whole batch.
        """
        advantages = batch.advantages.to(logprobs.dtype)
        loss = self.scale * rlsdk.aggregate(-advantages * logprobs, batch, self.agg)
        metrics = {"advantage": rlsdk.aggregate(advantages, batch, self.agg).detach()}  # a tensor: no GPU wait
        return rlsdk.LossOutput(loss, metrics)

    def __repr__(self) -> str:
        return f"ScaledReinforce(scale={self.scale!r}, agg={self.agg!r})"


@rlsdk.hookimpl
def register_losses(register: Register) -> None:
    """Register this plugin's loss (kind ``loss``)."""
    register(NAME, ScaledReinforce)
