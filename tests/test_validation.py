"""rlsdk.validation: the option checks shared by the reference plugins."""

from __future__ import annotations

import doctest
import math

import pytest

import rlsdk.validation
from rlsdk import ConfigError
from rlsdk.validation import check_bool, check_choice, check_int, check_number


def message_of(check, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        check(*args, **kwargs)
    return str(info.value)


def test_doctests_pass():
    result = doctest.testmod(rlsdk.validation)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("value", [True, False])
def test_check_bool_accepts_bools(value):
    assert check_bool(value, "advantage.norm_std") is value


@pytest.mark.parametrize("value", [0, 1, "yes", "true", None, 1.0])
def test_check_bool_rejects_everything_else(value):
    message = message_of(check_bool, value, "advantage.norm_std")
    assert "advantage.norm_std" in message and repr(value) in message and "true or false" in message


@pytest.mark.parametrize(
    "value, low, high",
    [(0, None, None), (-5, None, None), (1, 1, None), (3, 1, 3), (10**30, 0, None)],
)
def test_check_int_accepts(value, low, high):
    result = check_int(value, "task.digits", low=low, high=high)
    assert result == value and type(result) is int


@pytest.mark.parametrize(
    "value, low, high, rule",
    [
        (0, 1, None, "an integer >= 1"),
        (4, 1, 3, "an integer >= 1 and <= 3"),
        (1, None, 0, "an integer <= 0"),
        (2.5, 1, None, "an integer >= 1"),
        (2.0, None, None, "an integer"),
        ("3", 1, None, "an integer >= 1"),
        (None, 1, None, "an integer >= 1"),
        (True, 0, None, "an integer >= 0"),
        (False, None, None, "an integer"),
    ],
)
def test_check_int_rejects(value, low, high, rule):
    message = message_of(check_int, value, "task.digits", low=low, high=high)
    assert message == f"task.digits must be {rule}, got {value!r}"


@pytest.mark.parametrize(
    "value, kwargs, expected",
    [
        (3, {}, 3.0),
        (-1e300, {}, -1e300),
        (0, {"low": 0.0}, 0.0),
        (1, {"low": 0.0, "high": 1.0}, 1.0),
        (1e-9, {"low": 0.0, "low_open": True}, 1e-9),
        (0.999, {"high": 1.0, "high_open": True}, 0.999),
        (None, {"none_ok": True}, None),
        (0.5, {"low": 0.0, "none_ok": True}, 0.5),
    ],
)
def test_check_number_accepts(value, kwargs, expected):
    result = check_number(value, "loss.eps_low", **kwargs)
    assert result == expected
    assert result is None or type(result) is float


@pytest.mark.parametrize(
    "value, kwargs, rule",
    [
        (-0.1, {"low": 0.0}, "a finite number >= 0"),
        (0.0, {"low": 0.0, "low_open": True}, "a finite number > 0"),
        (1.5, {"low": 0.0, "high": 1.0}, "a finite number >= 0 and <= 1"),
        (1.0, {"low": 0.0, "high": 1.0, "high_open": True}, "a finite number >= 0 and < 1"),
        (-2, {"low": 1.5, "none_ok": True}, "a finite number >= 1.5 or None"),
        (0.1, {"low": 0.1234567}, "a finite number >= 0.1234567"),  # a bound is shown exactly
        (0.0, {"low": 1e-6}, "a finite number >= 1e-06"),
        (None, {"low": 0.0}, "a finite number >= 0"),
        ("0.2", {}, "a finite number"),
        (True, {}, "a finite number"),
        (False, {"low": 0.0}, "a finite number >= 0"),
        (math.nan, {}, "a finite number"),
        (math.inf, {"low": 0.0}, "a finite number >= 0"),
        (-math.inf, {"high": 0.0}, "a finite number <= 0"),
    ],
)
def test_check_number_rejects(value, kwargs, rule):
    message = message_of(check_number, value, "loss.eps_low", **kwargs)
    assert message == f"loss.eps_low must be {rule}, got {value!r}"


def test_check_choice():
    assert check_choice("zero", "advantage.single_group", ("reward", "zero")) == "zero"
    message = message_of(check_choice, "mean", "advantage.single_group", ("reward", "zero"))
    assert message == "advantage.single_group must be one of 'reward', 'zero', got 'mean'"


def test_check_choice_suggests_the_closest():
    message = message_of(check_choice, "token_mean", "loss.agg", ("token-mean", "seq-mean-token-sum"))
    assert "loss.agg" in message and "'token_mean'" in message and "'token-mean', 'seq-mean-token-sum'" in message
    assert message.endswith("(did you mean 'token-mean'?)")


@pytest.mark.parametrize("value", [None, 3, ["k1"]])
def test_check_choice_rejects_non_strings(value):
    message = message_of(check_choice, value, "loss.kl_estimator", ("k1", "k2", "k3"))
    assert "loss.kl_estimator" in message and repr(value) in message


def test_errors_are_value_errors():
    # ConfigError subclasses ValueError, so callers that catch ValueError keep working.
    with pytest.raises(ValueError):
        check_int(-1, "sampler.n", low=1)


def test_check_logprob_inputs_names_the_backend_and_the_problem():
    import torch

    from rlsdk.validation import check_logprob_inputs

    hidden, weight = torch.zeros(3, 4), torch.zeros(5, 4)
    check_logprob_inputs(hidden, weight, torch.tensor([0, 4, -100]), 1.0, ignore_index=-100)
    cases = [
        ((hidden, torch.zeros(5, 3), torch.zeros(3, dtype=torch.long), 1.0), "expected hidden"),
        ((hidden.long(), weight, torch.zeros(3, dtype=torch.long), 1.0), "floating point"),
        ((hidden, weight, torch.zeros(2, dtype=torch.long), 1.0), "targets"),
        ((hidden, weight, torch.zeros(3, dtype=torch.long), 0.0), "temperature"),
        ((hidden, torch.zeros(0, 4), torch.zeros(3, dtype=torch.long), 1.0), "empty vocabulary"),
        ((hidden, weight, torch.tensor([0, 5, 1]), 1.0), r"\[0, 5\); got 5"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            check_logprob_inputs(*args, backend="my backend")
        assert str(info.value).startswith("my backend: ")
    with pytest.raises(ValueError, match="ignore_index=-1; got -100"):
        check_logprob_inputs(hidden, weight, torch.tensor([0, -100, 1]), 1.0, ignore_index=-1)
