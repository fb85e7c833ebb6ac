"""Tests of the built-in rewards (plugins/rlsdk_plugins/rewards.py)."""

from __future__ import annotations

import copy
import doctest
import random
import re
import warnings
from decimal import Decimal
from fractions import Fraction

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import rlsdk
from rlsdk import ConfigError
from rlsdk_plugins import rewards as rewards_module

ALPHABET = "0123456789 +-*/=<>()[]:;,.?!abcdefghijklmnopqrstuvwxyz"
NAMES = ["exact_match", "char_match", "numeric_match", "format", "overlong", "length_penalty"]


def create(kind: str, name: str, **options):
    """``rlsdk.create`` that tolerates *other* plugins of this repo failing to load while they are written."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"rlsdk: plugin rlsdk:(?!tasks |rewards )", category=RuntimeWarning)
        return rlsdk.create(kind, name, **options)


def score(name: str, completions: list[str], answers: list, **options) -> list[float]:
    reward = create("reward", name, **options)
    return reward([""] * len(completions), completions, [{"answer": a} for a in answers])


def lengths_score(reward, lengths: list[float]) -> list[float]:
    return reward([""] * len(lengths), [""] * len(lengths), [{"completion_tokens": n} for n in lengths])


# -- independent references ------------------------------------------------------------------------


def char_match_reference(completion: str, answer: str) -> float:
    c, a = completion.strip(), answer.strip()
    if c == a:
        return 1.0
    matches = 0
    for i in range(min(len(c), len(a))):
        if c[i] == a[i]:
            matches += 1
    return matches / max(len(a), len(c), 1)


def overlong_reference(length: float, max_length: int, cache_length: int, factor: float) -> float:
    expected = max_length - cache_length
    if length <= expected:
        return 0.0
    if length > max_length:
        return -factor
    return float(-(Fraction(length) - expected) / cache_length * Fraction(factor))


# -- common behaviour ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_created_through_registry(name):
    reward = create("reward", name)
    assert isinstance(reward, rlsdk.Reward)
    assert rlsdk.get_registry().owner("reward", name) == "rlsdk:rewards"
    meta = [{"answer": "12", "completion_tokens": 3}, {"answer": "7", "extra": [1]}]
    before = copy.deepcopy(meta)
    out = reward(["p", "q"], ["12", "x 7"], meta)
    assert isinstance(out, list) and len(out) == 2 and all(type(v) is float for v in out)
    assert meta == before  # inputs are not mutated
    assert reward([], [], []) == []


@pytest.mark.parametrize("name", NAMES)
def test_length_mismatch_is_an_error(name):
    reward = create("reward", name)
    with pytest.raises(ValueError, match="same length"):
        reward(["p"], ["a", "b"], [{"answer": "a"}, {"answer": "b"}])
    with pytest.raises(ValueError, match="same length"):
        reward(["p", "q"], ["a", "b"], [{"answer": "a"}])


@pytest.mark.parametrize("name", ["exact_match", "char_match", "numeric_match"])
def test_missing_answer_is_an_error(name):
    with pytest.raises(ValueError, match="no 'answer'"):
        create("reward", name)(["p"], ["1"], [{}])


def test_doctests_pass():
    result = doctest.testmod(rewards_module)
    assert result.failed == 0
    assert result.attempted >= 6


def test_unknown_option_is_rejected_by_create():
    with pytest.raises(ConfigError, match="tol"):
        create("reward", "numeric_match", tolerance=0.1)


# -- exact_match and char_match --------------------------------------------------------------------


def test_exact_match_values():
    completions = ["2740", " 2740\n", "274", "27400", "", "859"]
    answers = ["2740", "2740", "2740", "2740", "2740", 859]
    assert score("exact_match", completions, answers) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert score("exact_match", ["a b"], [" a b "]) == [1.0]
    assert score("exact_match", ["ab"], ["a b"]) == [0.0]


def test_char_match_values():
    completions = ["2740", "2704", "27", "274000", "", "", " 2740 ", "0000", "x2740"]
    answers = ["2740", "2740", "2740", "2740", "2740", "", "2740", "2740", "2740"]
    expected = [1.0, 0.5, 0.5, 4 / 6, 0.0, 1.0, 1.0, 0.25, 0.0]
    assert score("char_match", completions, answers) == pytest.approx(expected, abs=1e-12)


def test_random_policy_scores_low_and_perfect_policy_scores_one_on_reverse():
    task = create("task", "reverse")
    examples = task.sample(2000, torch.Generator().manual_seed(0))
    rng = random.Random(0)
    completions = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 8))) for _ in examples]
    prompts = [ex.prompt for ex in examples]
    metadata = [ex.reward_metadata() for ex in examples]
    char_match = create("reward", "char_match")
    random_scores = char_match(prompts, completions, metadata)
    assert sum(random_scores) / len(random_scores) < 0.15
    perfect = [ex.answer for ex in examples]
    assert char_match(prompts, perfect, metadata) == [1.0] * len(examples)
    assert create("reward", "exact_match")(prompts, perfect, metadata) == [1.0] * len(examples)


text = st.text(alphabet=ALPHABET, max_size=10)


@settings(max_examples=50, deadline=None)
@given(completion=text, answer=text)
def test_property_char_match(completion, answer):
    [value] = score("char_match", [completion], [answer])
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(char_match_reference(completion, answer), abs=1e-12)
    [exact] = score("exact_match", [completion], [answer])
    if exact == 1.0:
        assert value == 1.0
    assert score("char_match", [answer], [answer]) == [1.0]


# -- numeric_match ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("859", "859", 1.0),
        ("the answer is 859.", "859", 1.0),
        ("859.0000001", "859", 1.0),
        ("859.01", "859", 0.0),
        ("859 then 860", "859", 0.0),  # the last number counts
        ("x=-3", "-3", 1.0),
        ("5-3", "-3", 0.0),  # a minus after a digit is an operator
        ("5-3", "3", 1.0),
        ("+4", "4", 1.0),
        (".5", "0.5", 1.0),
        ("no number here", "1", 0.0),
        ("", "0", 0.0),
        ("123456789012345678901234567890", "123456789012345678901234567891", 0.0),  # exact, no float rounding
        ("123456789012345678901234567890", "123456789012345678901234567890", 1.0),
        ("1,000", "1000", 0.0),
        ("3.14", 3.14, 1.0),
    ],
)
def test_numeric_match_values(completion, answer, expected):
    assert score("numeric_match", [completion], [answer]) == [expected]


def test_numeric_match_tolerance_and_errors():
    assert score("numeric_match", ["859.05", "859.2"], ["859", "859"], tol=0.1) == [1.0, 0.0]
    assert score("numeric_match", ["859.0000001"], ["859"], tol=0) == [0.0]
    for bad_answer in ("abc", "nan", "inf", ""):
        with pytest.raises(ValueError, match="not a finite number"):
            score("numeric_match", ["1"], [bad_answer])
    for bad in (-1e-3, float("nan"), "0.1", True):
        with pytest.raises(ConfigError, match="rewards.numeric_match.tol"):
            create("reward", "numeric_match", tol=bad)


def test_last_number():
    assert rewards_module.last_number("a 1 b -2.5 c") == Decimal("-2.5")
    assert rewards_module.last_number("version1") == Decimal("1")
    assert rewards_module.last_number("...") is None


@settings(max_examples=40, deadline=None)
@given(value=st.integers(-(10**30), 10**30), prefix=st.text(alphabet="abc =:", max_size=5))
def test_property_numeric_match_integers(value, prefix):
    assume(not prefix.endswith(("a", "b", "c")))  # "c-5": the sign then belongs to the word
    assert score("numeric_match", [f"{prefix}{value}"], [str(value)]) == [1.0]
    assert score("numeric_match", [f"{prefix}{value + 1}"], [str(value)]) == [0.0]


# -- format ----------------------------------------------------------------------------------------


def test_format_values_and_pattern():
    assert score("format", ["0247", " 0247 ", "", "02a7", "12.5"], ["x"] * 5) == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert score("format", ["12.5", "12", "a12.5"], ["x"] * 3, pattern=r"-?\d+(\.\d+)?") == [1.0, 1.0, 0.0]
    # fullmatch: a pattern matching a prefix only is not enough
    assert score("format", ["123abc"], ["x"], pattern=r"\d+") == [0.0]
    with pytest.raises(ConfigError, match=re.escape("rewards.format.pattern") + ".*not a valid regular expression"):
        create("reward", "format", pattern="(")
    with pytest.raises(ConfigError, match="rewards.format.pattern"):
        create("reward", "format", pattern=5)


# -- overlong --------------------------------------------------------------------------------------


def test_overlong_values():
    reward = create("reward", "overlong", max_length=100, cache_length=20, factor=2.0)
    lengths = [0, 50, 80, 81, 90, 100, 101, 10_000]
    expected = [0.0, 0.0, 0.0, -0.1, -1.0, -2.0, -2.0, -2.0]
    assert lengths_score(reward, lengths) == pytest.approx(expected, abs=1e-12)
    # Fallback to the completion's length in characters.
    assert reward(["", ""], ["x" * 90, "x" * 70], [{}, {}]) == pytest.approx([-1.0, 0.0])
    defaults = create("reward", "overlong")
    assert (defaults.max_length, defaults.cache_length, defaults.factor) == (20480, 4096, 1.0)  # DAPO
    assert lengths_score(defaults, [16384, 18432, 20480]) == pytest.approx([0.0, -0.5, -1.0])


@pytest.mark.parametrize(
    "options, option",
    [
        ({"max_length": 0}, "rewards.overlong.max_length"),
        ({"max_length": 10, "cache_length": 10}, "rewards.overlong.cache_length"),
        ({"max_length": 10, "cache_length": 0}, "rewards.overlong.cache_length"),
        ({"max_length": 10.5}, "rewards.overlong.max_length"),
        ({"factor": -1.0}, "rewards.overlong.factor"),
        ({"factor": float("inf")}, "rewards.overlong.factor"),
    ],
)
def test_overlong_invalid_options(options, option):
    with pytest.raises(ConfigError, match=re.escape(option)):
        create("reward", "overlong", **options)


overlong_options = st.integers(2, 5000).flatmap(
    lambda m: st.tuples(st.just(m), st.integers(1, m - 1), st.floats(0.0, 10.0, allow_nan=False))
)


@settings(max_examples=50, deadline=None)
@given(options=overlong_options, length=st.floats(0, 20000, allow_nan=False))
def test_property_overlong_matches_reference(options, length):
    max_length, cache_length, factor = options
    reward = create("reward", "overlong", max_length=max_length, cache_length=cache_length, factor=factor)
    [value] = lengths_score(reward, [length])
    assert value == pytest.approx(overlong_reference(length, max_length, cache_length, factor), rel=1e-9, abs=1e-12)
    assert -factor <= value <= 0.0


@settings(max_examples=50, deadline=None)
@given(options=overlong_options)
def test_property_overlong_continuous_at_both_ends(options):
    max_length, cache_length, factor = options
    reward = create("reward", "overlong", max_length=max_length, cache_length=cache_length, factor=factor)
    expected = max_length - cache_length
    eps = 1e-7
    below_exp, at_exp, above_exp = lengths_score(reward, [expected - eps, expected, expected + eps])
    assert below_exp == at_exp == 0.0
    assert abs(above_exp - at_exp) <= factor * 2 * eps / cache_length + 1e-12
    below_max, at_max, above_max = lengths_score(reward, [max_length - eps, max_length, max_length + eps])
    assert at_max == pytest.approx(-factor, abs=1e-12) and above_max == -factor
    assert abs(below_max - at_max) <= factor * 2 * eps / cache_length + 1e-12


@settings(max_examples=50, deadline=None)
@given(options=overlong_options, a=st.integers(0, 6000), b=st.integers(0, 6000))
def test_property_overlong_non_increasing(options, a, b):
    max_length, cache_length, factor = options
    reward = create("reward", "overlong", max_length=max_length, cache_length=cache_length, factor=factor)
    short, long = sorted((a, b))
    v_short, v_long = lengths_score(reward, [short, long])
    assert v_long <= v_short


# -- length_penalty ------------------------------------------------------------------------------


def test_length_penalty_values_and_validation():
    reward = create("reward", "length_penalty", coef=0.5, max_length=10)
    assert lengths_score(reward, [0, 5, 10, 20]) == pytest.approx([0.0, -0.25, -0.5, -1.0])
    assert reward(["", ""], ["abcd", ""], [{}, {}]) == pytest.approx([-0.2, 0.0])
    assert create("reward", "length_penalty").max_length == 20480
    with pytest.raises(ConfigError, match=re.escape("rewards.length_penalty.max_length")):
        create("reward", "length_penalty", max_length=0)
    with pytest.raises(ConfigError, match=re.escape("rewards.length_penalty.coef")):
        create("reward", "length_penalty", coef=float("nan"))


@settings(max_examples=40, deadline=None)
@given(
    coef=st.floats(-5, 5, allow_nan=False),
    max_length=st.integers(1, 1000),
    lengths=st.lists(st.integers(0, 3000), min_size=1, max_size=5),
)
def test_property_length_penalty_linear(coef, max_length, lengths):
    reward = create("reward", "length_penalty", coef=coef, max_length=max_length)
    values = lengths_score(reward, lengths)
    for n, v in zip(lengths, values):
        assert v == pytest.approx(float(-Fraction(coef) * n / max_length), rel=1e-9, abs=1e-12)
