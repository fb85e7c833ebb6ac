"""Algorithm presets grpo, dr_grpo, rloo and reinforce_pp (register_algorithms)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import rlsdk
from rlsdk import ConfigError, RolloutBatch

PRESETS = {"grpo": "rlsdk:grpo", "dr_grpo": "rlsdk:grpo", "rloo": "rlsdk:rloo", "reinforce_pp": "rlsdk:reinforce_pp"}
SECTIONS = {"loss", "advantage", "sampler", "rewards", "logprob", "train"}
#: The loss components and options the presets may name (written by another helper).
LOSS_OPTIONS = {
    "clipped_pg": {
        "eps_low",
        "eps_high",
        "dual_clip_c",
        "delta",
        "logratio_clamp",
        "kl_coef",
        "kl_estimator",
        "kl_input_clamp",
        "kl_output_clamp",
        "entropy_coef",
        "agg",
    },
    "reinforce": {"kl_coef", "kl_estimator", "kl_input_clamp", "kl_output_clamp", "entropy_coef", "agg"},
}
SAMPLER_OPTIONS = {"group": {"n", "temperature", "top_p", "max_new_tokens"}}


def preset(name: str) -> dict:
    return rlsdk.create("algorithm", name)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_is_registered_by_its_module(name):
    registry = rlsdk.get_registry()
    assert name in registry.names("algorithm")
    assert registry.owner("algorithm", name) == PRESETS[name]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_sections_name_existing_components(name):
    config = preset(name)
    assert isinstance(config, dict) and config
    assert set(config) <= SECTIONS
    json.dumps(config)  # plain data only
    registry = rlsdk.get_registry()
    for section, options in config.items():
        assert isinstance(options, dict) and isinstance(options.get("name"), str), section
        options = {k: v for k, v in options.items() if k != "name"}
        component = config[section]["name"]
        if section == "advantage":
            assert component in registry.names("advantage")
            rlsdk.create("advantage", component, **options)  # the options are valid
        elif section == "loss":
            assert component in LOSS_OPTIONS
            assert set(options) <= LOSS_OPTIONS[component]
            if "agg" in options:
                assert options["agg"] in rlsdk.functional.AGGREGATION_MODES
            if component in registry.names("loss"):
                rlsdk.create("loss", component, **options)
        elif section == "sampler":
            assert component in SAMPLER_OPTIONS
            assert set(options) <= SAMPLER_OPTIONS[component]


def test_preset_contents():
    grpo = preset("grpo")
    assert grpo["advantage"] == {"name": "grpo", "eps": 1e-6, "norm_std": True, "unbiased": True, "single_group": None}
    assert grpo["loss"]["name"] == "clipped_pg"
    assert grpo["loss"]["agg"] == "seq-mean-token-mean"
    assert (grpo["loss"]["eps_low"], grpo["loss"]["eps_high"], grpo["loss"]["kl_coef"]) == (0.2, 0.2, 0.0)

    dr = preset("dr_grpo")
    assert dr["advantage"]["norm_std"] is False
    assert dr["loss"]["agg"] == "seq-mean-token-sum-norm"

    assert preset("rloo")["advantage"] == {"name": "rloo"}
    assert preset("rloo")["loss"]["agg"] == "token-mean"

    pp = preset("reinforce_pp")
    assert pp["advantage"] == {"name": "reinforce_plus_plus_baseline", "style": "verl"}
    assert pp["loss"]["agg"] == "token-mean"
    # The built-in experiment's entropy bonus is stated by every preset (see ENTROPY_BONUS), so
    # switching the algorithm changes only the algorithm.
    from rlsdk_plugins.policy_gradient import ENTROPY_BONUS

    assert {preset(a)["loss"]["entropy_coef"] for a in ("grpo", "dr_grpo", "rloo", "reinforce_pp")} == {ENTROPY_BONUS}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_returns_a_fresh_dict(name):
    first = preset(name)
    pristine = copy.deepcopy(first)
    first["advantage"]["name"] = "changed"
    first["loss"].clear()
    assert preset(name) == pristine


def test_preset_takes_no_options():
    with pytest.raises(ConfigError, match="unknown option 'eps'"):
        rlsdk.create("algorithm", "grpo", eps=1e-4)


def test_preset_advantages_behave_as_documented():
    """grpo's advantage is dr_grpo's divided by (sigma_g + eps), per group."""
    batch = RolloutBatch(
        rewards=torch.tensor([1.0, 0.0, 0.0, 3.0, 5.0, 4.0]),
        group_ids=torch.tensor([2, 2, 2, 8, 8, 8]),
        mask=torch.ones(6, 3),
    )

    def build(name: str):
        section = dict(preset(name)["advantage"])
        return rlsdk.create("advantage", section.pop("name"), **section)

    grpo, dr = build("grpo")(batch), build("dr_grpo")(batch)
    sigma = torch.tensor([3**-0.5 * 1.0] * 3 + [1.0] * 3)  # unbiased std of (1, 0, 0) and (3, 5, 4)
    torch.testing.assert_close(grpo, dr / (sigma[:, None] + 1e-6))
    rloo = build("rloo")(batch)
    torch.testing.assert_close(rloo, 1.5 * dr)  # n / (n - 1) * (R - mu)
    pp = build("reinforce_pp")(batch)
    torch.testing.assert_close(pp, rlsdk.masked_whiten(dr, batch.mask))
