"""The runtime checks at component boundaries accept every form the contract allows (their rejections
are in the catalogue, tests/test_bad_inputs.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rlsdk
from rlsdk.checks import check_advantages, check_loss_output, check_rewards
from rlsdk.errors import ComponentError, ConfigError, guard


@pytest.mark.parametrize(
    "values",
    [[1, 0], (True, False), np.array([1.0, 0.0], dtype=np.float32), np.array([True, False]), torch.tensor([1.0, 0.0]),
     [np.float64(1.0), torch.tensor(0.0)], [np.int64(1), 0]],
)  # fmt: skip
def test_rewards_in_every_allowed_form(values):
    out = check_rewards(values, ["a", "b"], "reward r")
    assert out.dtype == torch.float32 and out.tolist() == [1.0, 0.0]


def test_advantages_and_loss_outputs_that_are_fine_pass_unchanged():
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    adv = torch.tensor([[0.5, float("nan")], [1.0, -1.0]])  # not finite only where the mask is 0
    assert check_advantages(adv, mask, "advantage a") is adv
    loss = torch.tensor(1.0, requires_grad=True) * 2
    out = rlsdk.LossOutput(loss, {"a": 1.0, "b": torch.tensor(2.0), "c": np.float32(3.0)})
    assert check_loss_output(out, "loss l") is out


def test_guard_names_the_component_and_lets_rlsdk_errors_and_interrupts_through():
    with pytest.raises(
        ComponentError,
        match=r"^reward 'r' \(plugin p\) raised ZeroDivisionError in reward\(\.\.\.\): division by zero$",
    ):
        with guard("reward 'r' (plugin p)", "reward(...)"):
            _ = 1 / 0
    with pytest.raises(ConfigError, match="on purpose"):
        with guard("x", "y"):
            raise ConfigError("on purpose")
    with pytest.raises(KeyboardInterrupt):
        with guard("x", "y"):
            raise KeyboardInterrupt
