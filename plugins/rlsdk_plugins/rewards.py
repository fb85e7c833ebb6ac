"""Built-in rewards: answer checks and length shaping.

Every reward is called as ``reward(prompts, completions, metadata) -> list[float]`` with one float per
completion; ``metadata[i]["answer"]`` is the task's answer and ``metadata[i].get("completion_tokens")``
the completion's length in tokens (rewards fall back to ``len(completion)``, which is the token count of
the character-level tiny policy). The config's ``rewards`` section combines them as a weighted sum.

==================  ===========================================================  ===================
name                score                                                        source
==================  ===========================================================  ===================
``exact_match``     ``1[strip(y) == strip(answer)]``                             TRL/verl accuracy
``char_match``      matching positions / max(len), partial credit                rlsdk
``numeric_match``   ``1[|last number in y - answer| <= tol]``                    verl gsm8k style
``format``          ``1[re.fullmatch(pattern, strip(y))]``                       TRL format rewards
``overlong``        DAPO soft overlong punishment                                DAPO, verl, TRL
``length_penalty``  ``-coef * |y| / max_length``                                 rlsdk
==================  ===========================================================  ===================
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

import rlsdk
from rlsdk import ConfigError
from rlsdk.validation import check_int, check_number

__all__ = [
    "ExactMatch",
    "CharMatch",
    "NumericMatch",
    "FormatReward",
    "OverlongPunishment",
    "LengthPenalty",
    "last_number",
]


class _PerCompletion:
    """Scores each completion on its own with ``score(completion, metadata) -> float``."""

    name: str = ""

    def __call__(self, prompts: list[str], completions: list[str], metadata: list[dict[str, Any]]) -> list[float]:
        """Score ``completions`` (``B`` strings) against ``metadata`` (``B`` dicts); returns ``B`` floats."""
        if not len(prompts) == len(completions) == len(metadata):
            raise ValueError(
                f"reward {self.name}: got {len(prompts)} prompts, {len(completions)} completions and "
                f"{len(metadata)} metadata dicts; they must have the same length"
            )
        return [float(self.score(c, m)) for c, m in zip(completions, metadata)]

    def score(self, completion: str, metadata: dict[str, Any]) -> float:
        raise NotImplementedError

    def _answer(self, metadata: dict[str, Any]) -> str:
        if "answer" not in metadata:
            raise ValueError(f"reward {self.name}: metadata has no 'answer' (keys: {sorted(metadata)})")
        return str(metadata["answer"])

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({options})"


def _length(completion: str, metadata: dict[str, Any]) -> float:
    """``|y|``: ``metadata["completion_tokens"]`` when present, else ``len(completion)``."""
    tokens = metadata.get("completion_tokens")
    return float(len(completion) if tokens is None else tokens)


class ExactMatch(_PerCompletion):
    """``r = 1.0 if strip(y) == strip(answer) else 0.0`` (the binary accuracy reward of TRL and verl).

    Example:
        >>> ExactMatch()(["rev 12=", "rev 12="], [" 21", "12"], [{"answer": "21"}, {"answer": "21"}])
        [1.0, 0.0]
    """

    name = "exact_match"

    def score(self, completion: str, metadata: dict[str, Any]) -> float:
        return 1.0 if completion.strip() == self._answer(metadata).strip() else 0.0


class CharMatch(_PerCompletion):
    """Positional partial credit for the digit tasks (rlsdk).

    With ``a = strip(answer)`` and ``c = strip(y)``:
    ``r = #{i : c[i] == a[i]} / max(|a|, |c|, 1)``, and ``r = 1`` when ``c == a`` (so an empty answer
    matched exactly scores 1 too). ``r`` is in ``[0, 1]``; a uniformly random string scores near 0, a
    correct one 1, and extra or missing characters cost credit.

    Example:
        >>> CharMatch()(["", "", ""], ["2740", "2700", "27400"], [{"answer": "2740"}] * 3)
        [1.0, 0.75, 0.8]
    """

    name = "char_match"

    def score(self, completion: str, metadata: dict[str, Any]) -> float:
        a, c = self._answer(metadata).strip(), completion.strip()
        if a == c:
            return 1.0
        matches = sum(x == y for x, y in zip(a, c))
        return matches / max(len(a), len(c), 1)


_NUMBER = re.compile(r"(?:(?<![\w.])[-+])?(?:\d+(?:\.\d+)?|\.\d+)")


def last_number(text: str) -> Decimal | None:
    """The last number in ``text`` (an integer or decimal, optionally signed), or None.

    A sign counts only when it does not follow a letter, digit, ``_`` or ``.``, so ``"5-3"`` ends with
    ``3`` while ``"x=-3"`` ends with ``-3``. Decimals are exact: long integers compare without rounding.

    Example:
        >>> last_number("so 12 + 30 = -42.50.")
        Decimal('-42.50')
        >>> last_number("none") is None
        True
    """
    found = _NUMBER.findall(text)
    return Decimal(found[-1]) if found else None


class NumericMatch(_PerCompletion):
    """``r = 1[|x - answer| <= tol]`` with ``x`` the last number in ``y``; 0 when ``y`` has none.

    The last-number rule is that of verl's flexible gsm8k scorer; the comparison is exact decimal
    arithmetic with the absolute tolerance ``tol``. A non-numeric answer is a ``ValueError`` (the
    reward does not fit the task).

    Args:
        tol: Absolute tolerance (>= 0).

    Example:
        >>> NumericMatch()(["", ""], ["it is 859.", "858 or 860"], [{"answer": "859"}, {"answer": 859}])
        [1.0, 0.0]
    """

    name = "numeric_match"

    def __init__(self, tol: float = 1e-6):
        self.tol = check_number(tol, "rewards.numeric_match.tol", low=0.0)
        self._tol = Decimal(repr(self.tol))

    def score(self, completion: str, metadata: dict[str, Any]) -> float:
        answer = self._answer(metadata)
        try:
            gold = Decimal(answer.strip())
        except InvalidOperation:
            gold = None
        if gold is None or not gold.is_finite():
            raise ValueError(f"reward numeric_match: the answer {answer!r} is not a finite number")
        found = last_number(completion)
        return 1.0 if found is not None and abs(found - gold) <= self._tol else 0.0


class FormatReward(_PerCompletion):
    """``r = 1.0 if re.fullmatch(pattern, strip(y)) else 0.0`` (as TRL's format rewards).

    Args:
        pattern: A Python regular expression; the default accepts a non-empty digit string.

    Example:
        >>> FormatReward()(["", ""], ["0247 ", "02a7"], [{"answer": "0247"}] * 2)
        [1.0, 0.0]
    """

    name = "format"

    def __init__(self, pattern: str = r"^\d+$"):
        if not isinstance(pattern, str):
            raise ConfigError(f"rewards.format.pattern must be a regular expression string, got {pattern!r}")
        try:
            self._regex = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"rewards.format.pattern={pattern!r} is not a valid regular expression: {exc}") from None
        self.pattern = pattern

    def score(self, completion: str, metadata: dict[str, Any]) -> float:
        return 1.0 if self._regex.fullmatch(completion.strip()) else 0.0


class OverlongPunishment(_PerCompletion):
    """DAPO soft overlong punishment (DAPO paper; verl ``overlong_buffer``; TRL ``get_soft_overlong_punishment``).

    With ``L_exp = max_length - cache_length`` and ``|y|`` the completion's token count::

        r = 0                                   if |y| <= L_exp
        r = (L_exp - |y|) / cache_length * f    if L_exp < |y| <= max_length
        r = -f                                  if |y| > max_length

    Continuous and non-increasing in ``|y|``. Defaults are DAPO's (``L_max = 20480``, ``L_cache = 4096``,
    ``f = 1``); for the built-in tasks use lengths near the sampler's token limit.

    Args:
        max_length: ``L_max`` (>= 2).
        cache_length: ``L_cache``, the width of the linear ramp (1 <= cache_length < max_length).
        factor: ``f``, the punishment at and beyond ``L_max`` (>= 0).

    Example:
        >>> reward = OverlongPunishment(max_length=10, cache_length=4)
        >>> reward(["", "", "", ""], ["", "", "", ""], [{"completion_tokens": n} for n in (6, 8, 10, 12)])
        [0.0, -0.5, -1.0, -1.0]
    """

    name = "overlong"

    def __init__(self, max_length: int = 20480, cache_length: int = 4096, factor: float = 1.0):
        self.max_length = check_int(max_length, "rewards.overlong.max_length", low=2)
        self.cache_length = check_int(cache_length, "rewards.overlong.cache_length", low=1)
        if cache_length >= max_length:
            raise ConfigError(
                f"rewards.overlong.cache_length={cache_length} must be smaller than "
                f"rewards.overlong.max_length={max_length} (the ramp starts at max_length - cache_length)"
            )
        self.factor = check_number(factor, "rewards.overlong.factor", low=0.0)

    def score(self, completion: str, metadata: dict[str, Any]) -> float:
        length = _length(completion, metadata)
        expected = self.max_length - self.cache_length
        if length <= expected:
            return 0.0
        if length <= self.max_length:
            return (expected - length) / self.cache_length * self.factor
        return -self.factor


class LengthPenalty(_PerCompletion):
    """A linear length penalty ``r = -coef * |y| / max_length`` (rlsdk).

    ``|y|`` is the completion's token count; the penalty is ``-coef`` at ``max_length`` and keeps
    growing beyond it. The default ``max_length`` is DAPO's ``L_max``, as for ``overlong``.

    Args:
        coef: Penalty at ``|y| = max_length`` (finite; negative rewards length).
        max_length: The normalising length (>= 1).

    Example:
        >>> LengthPenalty(coef=0.5, max_length=8)(["", ""], ["abcd", ""], [{}, {"completion_tokens": 16}])
        [-0.25, -1.0]
    """

    name = "length_penalty"

    def __init__(self, coef: float = 1.0, max_length: int = 20480):
        self.coef = check_number(coef, "rewards.length_penalty.coef")
        self.max_length = check_int(max_length, "rewards.length_penalty.max_length", low=1)

    def score(self, completion: str, metadata: dict[str, Any]) -> float:
        return -self.coef * _length(completion, metadata) / self.max_length


@rlsdk.hookimpl
def register_rewards(register: Any) -> None:
    """Register the built-in rewards."""
    register("exact_match", ExactMatch)
    register("char_match", CharMatch)
    register("numeric_match", NumericMatch)
    register("format", FormatReward)
    register("overlong", OverlongPunishment)
    register("length_penalty", LengthPenalty)
