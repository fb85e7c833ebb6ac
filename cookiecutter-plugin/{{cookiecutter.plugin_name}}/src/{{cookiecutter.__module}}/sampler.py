"""Sampler :data:`NAME`: the built-in ``group`` sampler, training only on groups whose rewards vary.

The completions of one prompt form a group. When every completion of a group gets the same reward, a
group-relative advantage is 0 for all of them: the group adds no learning signal, only tokens to the
loss's normaliser. DAPO (Yu et al. 2025, section 3.2, "dynamic sampling"; verl's ``filter_groups``)
filters such groups out. This sampler delegates the generation to rlsdk's ``group`` sampler (``n``
completions per prompt, temperature and top-p), then clears the mask of the uniform groups:

    keep_g = 1[max_{i in g} R_i > min_{i in g} R_i],        mask'[i, t] = mask[i, t] * keep_{g(i)}

The rows stay in the batch with their rewards (so the step's reward statistics are unchanged); they
only contribute no loss term. DAPO also samples more prompts until the batch is full; this example
does not, so a step may train on fewer completions (none, once every group is solved).

A sampler states its sampling settings as ``params`` (an ``rlsdk.SamplingParams``: the trainer reads
the temperature once, when it computes log-probabilities, and ``max_new_tokens`` is the constant
normaliser of ``seq-mean-token-sum-norm``) and gives evaluation's settings from ``eval_params``. It
is called with the generation engine and the params to use, and generates through the engine only.

Start your own sampler here: return a scored ``RolloutBatch`` whose ``group_ids`` tie the completions
of each prompt.
"""

from __future__ import annotations

import torch

import rlsdk
from rlsdk.hookspecs import Register
from rlsdk.validation import check_int

__all__ = ["NAME", "FilterGroups", "varied_groups", "register_samplers"]

#: The name this sampler is registered under (config ``sampler.name``), written here only: the
#: preset in ``plugin.py`` (which ``configs/train.yaml`` selects) and the tests read it.
NAME = "{{ cookiecutter.__sampler_name }}"


def varied_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: True where the row's group has rewards that are not all equal.

    Example:
        >>> varied_groups(torch.tensor([1.0, 1.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 1]))
        tensor([False, False,  True,  True])
    """
    _, inverse = torch.unique(group_ids, return_inverse=True)
    k = int(inverse.max()) + 1 if inverse.numel() else 0
    r = rewards.to(torch.float64)
    highest = r.new_full((k,), -torch.inf).scatter_reduce(0, inverse, r, "amax")
    lowest = r.new_full((k,), torch.inf).scatter_reduce(0, inverse, r, "amin")
    return (highest > lowest)[inverse]


class FilterGroups:
    """``group`` sampling, then ``mask[i] = 0`` for every completion of a group whose rewards are all equal.

    Args:
        n: Completions per prompt, at least 2 (config ``sampler.n``).
        temperature: Sampling temperature, 0 for greedy (``sampler.temperature``).
        top_p: Nucleus sampling mass in (0, 1] (``sampler.top_p``).
        max_new_tokens: Token limit per completion (``sampler.max_new_tokens``).
    """

    def __init__(self, n: int = 8, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 16) -> None:
        check_int(n, "sampler.n", low=2)  # a group of one never varies
        # the group sampler checks the other options now, so a bad config fails at start-up
        self._group = rlsdk.create("sampler", "group", n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
        self.params: rlsdk.SamplingParams = self._group.params

    def eval_params(self, temperature: float) -> rlsdk.SamplingParams:
        """Evaluation's settings: the ``group`` sampler's (one completion per prompt at ``temperature``)."""
        return self._group.eval_params(temperature)

    def __call__(
        self,
        engine: rlsdk.GenerationEngine,
        examples: list[rlsdk.Example],
        score: rlsdk.ScoreFn,
        generator: torch.Generator,
        params: rlsdk.SamplingParams,
    ) -> rlsdk.RolloutBatch:
        """Sample ``params.n`` scored completions per example; uniform groups get all-zero mask rows.

        Args:
            engine: The generation engine (it holds the policy's current weights).
            examples: The prompts of this step.
            score: Fills the rollout's rewards (given by the trainer).
            generator: The random generator to sample with.
            params: The sampling settings of this call (``self.params`` in training).

        Returns:
            The scored rollout, ``B = params.n * len(examples)`` rows, prompts in order.
        """
        rollout = self._group(engine, examples, score, generator, params)
        keep = varied_groups(rollout.rewards, rollout.group_ids).to(rollout.mask.dtype)
        return rollout.replace(mask=rollout.mask * keep[:, None])

    def __repr__(self) -> str:
        return f"FilterGroups({self.params!r})"


@rlsdk.hookimpl
def register_samplers(register: Register) -> None:
    """Register this plugin's sampler (kind ``sampler``)."""
    register(NAME, FilterGroups)
