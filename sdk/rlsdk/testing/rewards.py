"""Conformance checks of rewards: :func:`check_reward`."""

from __future__ import annotations

import math
from typing import Any

from rlsdk.testing._builders import _conform, _fail, _Snapshot

__all__ = ["check_reward"]


def _default_reward_inputs() -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Four tiny digit-task rows (numeric answers, one empty completion) for :func:`check_reward`."""
    prompts = ["rev 123=", "rev 450=", "sort 321=", "7+8="]
    completions = ["321", " 054", "12x", ""]
    answers = ["321", "054", "123", "15"]
    metadata = [{"answer": a, "completion_tokens": len(c)} for a, c in zip(answers, completions)]
    return prompts, completions, metadata


def check_reward(
    reward: Any,
    prompts: list[str] | None = None,
    completions: list[str] | None = None,
    metadata: list[dict[str, Any]] | None = None,
) -> None:
    """Check that ``reward`` honours the :class:`rlsdk.Reward` contract.

    ``reward(prompts, completions, metadata)`` must return a list with one finite python number
    (float or int, not bool) per completion, the same list on a second call, and must leave its
    input lists and dicts unchanged.

    Args:
        reward: The reward component (e.g. ``registry.create("reward", "my_reward")``).
        prompts: Prompt strings; default four tiny digit-task prompts.
        completions: Completion strings, as many as ``prompts``; default ``["321", " 054", "12x", ""]``.
        metadata: One dict per completion; default ``{"answer": ..., "completion_tokens": len(c)}``
            with numeric answers.

    Raises:
        AssertionError: ``"reward <Name>: <property>: <details>"`` for the first property that fails.
    """
    _conform("reward", reward)
    default_p, default_c, default_m = _default_reward_inputs()
    prompts = default_p if prompts is None else prompts
    completions = default_c if completions is None else completions
    metadata = default_m if metadata is None else metadata
    if not len(prompts) == len(completions) == len(metadata):
        raise ValueError(
            f"check_reward: {len(prompts)} prompts, {len(completions)} completions and {len(metadata)} metadata "
            "dicts given; they must have the same length"
        )
    inputs = {"prompts": prompts, "completions": completions, "metadata": metadata}
    snapshot = _Snapshot(inputs)
    values = reward(prompts, completions, metadata)
    snapshot.check("reward", reward, inputs)
    if not isinstance(values, list):
        _fail("reward", reward, "return type", f"returned {type(values).__name__}; expected a list of floats")
    if len(values) != len(completions):
        _fail("reward", reward, "length", f"returned {len(values)} values for {len(completions)} completions")
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(
                "reward",
                reward,
                "return type",
                f"value {i} is {value!r} ({type(value).__name__}); expected a python float",
            )
        if not math.isfinite(value):
            _fail("reward", reward, "finite", f"value {i} is {value} (for completion {completions[i]!r})")
    again = reward(prompts, completions, metadata)
    if again != values:
        _fail("reward", reward, "deterministic", f"two calls on the same inputs gave {values} and {again}")
