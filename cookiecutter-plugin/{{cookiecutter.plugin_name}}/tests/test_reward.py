"""The reward of this plugin: rlsdk's conformance checks and its formula."""

from __future__ import annotations

import pytest

from rlsdk.testing import check_reward

from {{ cookiecutter.__module }} import plugin
from {{ cookiecutter.__module }}.reward import NAME, DigitCount, digit_count_score



def test_conformance():
    check_reward(DigitCount())
    check_reward(DigitCount(), ["rev 12=", "rev 12="], ["21", "x"], [{"answer": "21"}, {"answer": "21"}])


def test_registered_by_the_plugin(rlsdk_registry):
    assert isinstance(rlsdk_registry(plugin).create("reward", NAME), DigitCount)


@pytest.mark.parametrize(
    ("completion", "answer", "score"),
    [("321", "123", 1.0), ("3", "123", 1 / 3), ("12345", "123", 0.6), ("", "123", 0.0), ("abc", "", 1.0)],
)
def test_formula(completion, answer, score):
    assert digit_count_score(completion, answer) == pytest.approx(score)
    assert DigitCount()(["p"], [completion], [{"answer": answer}]) == [pytest.approx(score)]


def test_needs_the_answer():
    with pytest.raises(ValueError, match="no 'answer'"):
        DigitCount()(["p"], ["1"], [{}])
