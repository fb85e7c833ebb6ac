"""A new loss as a plugin file: REINFORCE with a clipped, stop-gradient importance weight.

Used by docs/guide-losses.md; tests/test_sphinx.py runs it as a script (the checks at the bottom) and
trains with it through ``rlsdk train --plugin docs/examples/custom_loss.py loss.name=is_reinforce``.

Per token, with ``lp`` the current log-probability, ``lp_old`` the sampling policy's and ``A`` the
advantage (the importance-weight clipping of CISPO, MiniMax-M1 2025)::

    w = min(exp(lp - lp_old), 1 + eps_high)          (no gradient flows through w)
    L = -w * A * lp,   loss = aggregate(L, batch, agg)

Unlike PPO's clipped surrogate, no token loses its gradient: only its weight is capped.
"""

from __future__ import annotations

import torch

import rlsdk
from rlsdk.functional import AGGREGATION_MODES
from rlsdk.validation import check_choice, check_number


# -- start loss --
class ISReinforce:
    """``L = -sg(min(ratio, 1 + eps_high)) * A * lp``, aggregated with the batch's global counts."""

    def __init__(self, eps_high: float = 0.28, agg: str = "token-mean"):  # the options of `loss`
        self.eps_high = check_number(eps_high, "loss.eps_high", low=0.0)
        self.agg = check_choice(agg, "loss.agg", AGGREGATION_MODES)

    def __call__(self, logprobs: torch.Tensor, batch: rlsdk.TrainBatch) -> rlsdk.LossOutput:
        valid = batch.mask > 0
        zero = torch.zeros((), dtype=logprobs.dtype)
        # Zero masked positions before any arithmetic: padding may hold NaN or inf.
        lp = torch.where(valid, logprobs, zero)
        log_ratio = torch.where(valid, lp - batch.old_logprobs, zero).clamp(-20.0, 20.0)
        weight = torch.exp(log_ratio).clamp(max=1.0 + self.eps_high).detach()
        advantages = torch.where(valid, batch.advantages, zero)
        loss = rlsdk.aggregate(-weight * advantages * lp, batch, self.agg)
        capped = (torch.exp(log_ratio) > 1.0 + self.eps_high).to(lp.dtype)
        # Metrics are token means over the global batch, so they add up over micro-batches.
        return rlsdk.LossOutput(loss, {"capped_frac": float(rlsdk.aggregate(capped, batch, "token-mean"))})


@rlsdk.hookimpl
def register_losses(register):
    register("is_reinforce", ISReinforce)


# -- end loss --


def main() -> None:
    """Check the loss against REINFORCE and rlsdk's conformance checks."""
    # -- start checks --
    import rlsdk.testing

    loss = ISReinforce(eps_high=0.28)
    rlsdk.testing.check_loss(loss, additive_metrics=True)  # masks, gradients, micro-batches, ...

    # On-policy (lp == lp_old) every weight is 1: the gradient is REINFORCE's.
    batch = rlsdk.testing.make_train_batch(seed=1)
    lp = batch.old_logprobs.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(lp, batch).loss, lp)
    reinforce = rlsdk.create("loss", "reinforce", agg="token-mean")
    (expected,) = torch.autograd.grad(reinforce(lp, batch).loss, lp)
    torch.testing.assert_close(grad, expected)

    # Far off-policy the weight is capped at 1 + eps_high, but the gradient does not vanish.
    far = (batch.old_logprobs + 2.0).requires_grad_(True)
    out = loss(far, batch)
    (grad_far,) = torch.autograd.grad(out.loss, far)
    torch.testing.assert_close(grad_far, 1.28 * expected)
    assert out.metrics["capped_frac"] == 1.0
    # -- end checks --
    print("is_reinforce: all checks passed")


if __name__ == "__main__":
    main()
