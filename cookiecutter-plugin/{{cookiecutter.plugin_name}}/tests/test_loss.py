"""The loss of this plugin: rlsdk's conformance checks and its formula."""

from __future__ import annotations

import pytest
import torch

import rlsdk
from rlsdk.testing import check_loss

from {{ cookiecutter.__module }} import plugin
from {{ cookiecutter.__module }}.loss import NAME, ScaledReinforce



@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_conformance(agg):
    check_loss(ScaledReinforce(scale=0.5, agg=agg))


def test_conformance_on_the_fixture_batch(rlsdk_train_batch):
    check_loss(ScaledReinforce(), rlsdk_train_batch)


def test_built_from_config_options(rlsdk_registry):
    # rlsdk_registry(plugin): rlsdk's own components plus this plugin's, and no other installed plugin
    loss = rlsdk_registry(plugin).create("loss", NAME, {"scale": 2.0, "agg": "seq-mean-token-sum"})
    assert isinstance(loss, ScaledReinforce)
    assert (loss.scale, loss.agg) == (2.0, "seq-mean-token-sum")


def test_formula_and_gradient():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    advantages = torch.tensor([[1.0, 1.0, 0.0], [-2.0, 0.0, 0.0]])
    batch = rlsdk.TrainBatch(
        mask=mask, advantages=advantages, old_logprobs=torch.zeros(2, 3), rewards=torch.tensor([1.0, 0.0]), group_ids=torch.tensor([0, 0])
    )
    logprobs = torch.tensor([[-0.1, -0.2, -9.0], [-0.3, -9.0, -9.0]], requires_grad=True)
    out = ScaledReinforce(scale=3.0)(logprobs, batch)
    expected = 3.0 * -(1.0 * -0.1 + 1.0 * -0.2 + -2.0 * -0.3) / 3  # token-mean over the 3 valid tokens
    assert float(out.loss.detach()) == pytest.approx(expected)
    out.loss.backward()
    torch.testing.assert_close(logprobs.grad, -3.0 * advantages * mask / 3)


def test_rejects_a_bad_scale():
    with pytest.raises(rlsdk.ConfigError, match="loss.scale"):
        ScaledReinforce(scale=0.0)
