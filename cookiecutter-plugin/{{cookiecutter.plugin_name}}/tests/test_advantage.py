"""The advantage estimator of this plugin: rlsdk's conformance checks and its formula."""

from __future__ import annotations

import torch

import rlsdk
from rlsdk.testing import check_advantage

from {{ cookiecutter.__module }} import plugin
from {{ cookiecutter.__module }}.advantage import NAME, MeanBaseline



def test_conformance(rlsdk_rollout_batch):
    check_advantage(MeanBaseline())
    check_advantage(MeanBaseline(), rlsdk_rollout_batch)


def test_registered_by_the_plugin(rlsdk_registry):
    assert isinstance(rlsdk_registry(plugin).create("advantage", NAME), MeanBaseline)


def test_reward_minus_group_mean_on_valid_tokens():
    batch = rlsdk.RolloutBatch(
        rewards=torch.tensor([3.0, 1.0, 2.0, 5.0]),
        group_ids=torch.tensor([7, 7, 7, 2]),
        mask=torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]),
    )
    advantages = MeanBaseline()(batch)
    expected = torch.tensor([[1.0, 1.0], [-1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])  # group 7: mean 2; group 2 alone: 0
    torch.testing.assert_close(advantages, expected)
    assert advantages.dtype == torch.float32
