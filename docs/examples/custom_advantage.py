"""A new advantage estimator as a plugin file: a group-median baseline.

Used by docs/guide-advantages.md; tests/test_sphinx.py runs it as a script (the checks at the bottom)
and trains with it through ``rlsdk train --plugin docs/examples/custom_advantage.py
advantage.name=median_baseline``.

For completion ``i`` of group ``g`` (the completions of one prompt) with reward ``R_i``::

    A_i = R_i - median_{j in g} R_j,   broadcast over the completion's valid tokens

With binary rewards the median baseline credits only the minority outcome of a group, where the
mean baseline of Dr. GRPO (``grpo`` with ``norm_std=false``) credits every completion a little.
"""

from __future__ import annotations

import torch

import rlsdk


# -- start estimator --
class MedianBaseline:
    """``A_i = R_i - median(R of i's group)`` on every valid token, 0 where the mask is 0.

    ``torch.median`` takes the lower of the two middle values of an even-sized group.
    """

    def __call__(self, batch: rlsdk.RolloutBatch) -> torch.Tensor:
        scores = torch.empty_like(batch.rewards, dtype=torch.float32)
        for group in batch.group_ids.unique():
            rows = batch.group_ids == group
            scores[rows] = batch.rewards[rows].float() - batch.rewards[rows].float().median()
        return torch.where(batch.mask > 0, scores[:, None], 0.0)  # [B, T], exactly 0 on masked tokens


@rlsdk.hookimpl
def register_advantages(register):
    register("median_baseline", MedianBaseline)


# -- end estimator --


def main() -> None:
    """Compare with the mean baseline on a small batch and run rlsdk's conformance checks."""
    # -- start checks --
    import rlsdk.testing

    batch = rlsdk.RolloutBatch(
        rewards=torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0, 0.0]),
        group_ids=torch.tensor([0, 0, 0, 1, 1, 1]),
        mask=torch.tensor([[1, 1, 0]] * 6),
    )
    median = MedianBaseline()(batch)
    mean = rlsdk.create("advantage", "grpo", norm_std=False)(batch)  # Dr. GRPO: R_i - mean
    torch.testing.assert_close(median[:, 0], torch.tensor([-1.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(mean[:, 0], torch.tensor([-2 / 3, 1 / 3, 1 / 3, 0.0, 0.0, 0.0]))
    assert (median[:, 2] == 0).all() and (mean[:, 2] == 0).all()  # masked tokens get nothing

    rlsdk.testing.check_advantage(MedianBaseline())  # shapes, masks, determinism, inputs unchanged
    # -- end checks --
    print("median_baseline: all checks passed")


if __name__ == "__main__":
    main()
