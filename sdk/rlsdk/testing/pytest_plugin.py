"""The pytest plugin of rlsdk: fixtures only (the checks are plain functions in :mod:`rlsdk.testing`).

Installing rlsdk registers this module with pytest (the ``pytest11`` entry point
``rlsdk = "rlsdk.testing.pytest_plugin"``), so the tests of any plugin package get these fixtures
with no configuration. All are CPU, tiny and seeded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from rlsdk.testing._builders import (
    make_engine,
    make_examples,
    make_policy,
    make_registry,
    make_rollout_batch,
    make_train_batch,
)

if TYPE_CHECKING:
    from rlsdk.plugins import Registry
    from rlsdk.types import Example, RolloutBatch, TrainBatch

__all__ = [
    "rlsdk_registry",
    "rlsdk_train_batch",
    "rlsdk_rollout_batch",
    "rlsdk_policy",
    "rlsdk_examples",
    "rlsdk_engine",
]


@pytest.fixture
def rlsdk_registry() -> Callable[..., Registry]:
    """A factory: ``rlsdk_registry(my_plugin, builtins=True)`` is :func:`make_registry`'s fresh registry."""
    return make_registry


@pytest.fixture
def rlsdk_train_batch() -> TrainBatch:
    """:func:`make_train_batch` with seed 0: 8 rows x 6 tokens, ragged mask, ``ref_logprobs`` filled."""
    return make_train_batch()


@pytest.fixture
def rlsdk_rollout_batch() -> RolloutBatch:
    """:func:`make_rollout_batch` with seed 0: 2 groups of 4 completions of 6 tokens."""
    return make_rollout_batch()


@pytest.fixture
def rlsdk_policy() -> Any:
    """:func:`make_policy` with seed 0: a tiny character-level policy (16 hidden units, one layer)."""
    return make_policy()


@pytest.fixture
def rlsdk_examples() -> list[Example]:
    """:func:`make_examples` with seed 0: three distinct ``reverse`` examples."""
    return make_examples()


@pytest.fixture
def rlsdk_engine(rlsdk_policy: Any) -> Any:
    """:func:`make_engine` of ``rlsdk_policy``: the ``inprocess`` engine at weight version 0."""
    return make_engine(policy=rlsdk_policy)
