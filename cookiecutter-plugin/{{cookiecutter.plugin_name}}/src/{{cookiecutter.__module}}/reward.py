"""Reward :data:`NAME`: partial credit for answering with the right number of digits.

With ``d(s)`` the number of digit characters in ``s``, ``y`` the completion and ``a`` the task's
answer (``metadata[i]["answer"]``):

    r = 1 - |d(y) - d(a)| / max(d(y), d(a), 1)

so ``r = 1`` when the completion has as many digits as the answer, and ``r`` falls linearly to 0 as the
counts diverge. It is a shaping reward for digit tasks (``reverse``, ``sort``, ``addition``): combine it
with an answer check in the config's ``rewards`` section, e.g. ``char_match`` with weight 1 and this
one with a small weight.

Start your own reward here: one float per completion, from the prompts, completions and metadata.
"""

from __future__ import annotations

from typing import Any

import rlsdk
from rlsdk.hookspecs import Register

__all__ = ["NAME", "DigitCount", "digit_count_score", "register_rewards"]

#: The name this reward is registered under (config ``rewards.<name>.weight``), written here only: the
#: preset in ``plugin.py`` (which ``configs/train.yaml`` selects) and the tests read it.
NAME = "{{ cookiecutter.__reward_name }}"


def digit_count_score(completion: str, answer: str) -> float:
    """``1 - |d(y) - d(a)| / max(d(y), d(a), 1)`` for completion ``y`` and answer ``a``.

    Example:
        >>> digit_count_score("12", "4321")
        0.5
        >>> digit_count_score("no digits", "")
        1.0
    """
    got = sum(ch.isdigit() for ch in completion)
    want = sum(ch.isdigit() for ch in answer)
    return 1.0 - abs(got - want) / max(got, want, 1)


class DigitCount:
    """Scores each completion with :func:`digit_count_score` against ``metadata[i]["answer"]``.

    Example:
        >>> DigitCount()(["rev 1234=", "rev 1234="], ["4321", "43"], [{"answer": "4321"}, {"answer": "4321"}])
        [1.0, 0.5]
    """

    def __call__(self, prompts: list[str], completions: list[str], metadata: list[dict[str, Any]]) -> list[float]:
        """One score per completion; ``prompts``, ``completions`` and ``metadata`` have the same length."""
        if not len(prompts) == len(completions) == len(metadata):
            raise ValueError(
                f"reward {NAME}: got {len(prompts)} prompts, {len(completions)} completions "
                f"and {len(metadata)} metadata dicts; they must have the same length"
            )
        scores = []
        for i, (completion, meta) in enumerate(zip(completions, metadata)):
            if "answer" not in meta:
                raise ValueError(f"reward {NAME}: metadata[{i}] has no 'answer' (keys: {sorted(meta)})")
            scores.append(digit_count_score(completion, str(meta["answer"])))
        return scores

    def __repr__(self) -> str:
        return "DigitCount()"


@rlsdk.hookimpl
def register_rewards(register: Register) -> None:
    """Register this plugin's reward (kind ``reward``)."""
    register(NAME, DigitCount)
