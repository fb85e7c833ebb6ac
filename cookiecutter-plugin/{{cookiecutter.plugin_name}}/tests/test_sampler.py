"""The sampler of this plugin: rlsdk's conformance checks and its behaviour."""

from __future__ import annotations

import pytest
import torch

import rlsdk
from rlsdk.testing import check_sampler

from {{ cookiecutter.__module }} import plugin
from {{ cookiecutter.__module }}.sampler import NAME, FilterGroups



def test_conformance():
    check_sampler(FilterGroups(n=2, max_new_tokens=4))


def test_built_from_config_options(rlsdk_registry):
    sampler = rlsdk_registry(plugin).create("sampler", NAME, {"n": 3, "temperature": 0.7, "max_new_tokens": 5})
    assert isinstance(sampler, FilterGroups)
    assert sampler.params == rlsdk.SamplingParams(n=3, temperature=0.7, top_p=1.0, max_new_tokens=5)


@pytest.mark.parametrize(("options", "option"), [({"n": 1}, "sampler.n"), ({"top_p": 0.0}, "sampler.top_p")])
def test_bad_options_fail_at_construction(options, option):
    with pytest.raises(rlsdk.ConfigError, match=option):
        FilterGroups(**options)


def test_only_groups_with_varied_rewards_are_trained_on(rlsdk_engine, rlsdk_examples):
    engine, examples = rlsdk_engine, rlsdk_examples  # a tiny policy's engine and three `reverse` examples

    def score(rollout):  # group 0: all 1.0 (uniform); groups 1 and 2: alternating 0 and 1
        rewards = torch.tensor([1.0 if g == 0 else float(i % 2) for i, g in enumerate(rollout.group_ids.tolist())])
        return rollout.replace(rewards=rewards)

    options = {"n": 4, "max_new_tokens": 4}
    sampler, group = FilterGroups(**options), rlsdk.create("sampler", "group", **options)
    ours = sampler(engine, examples, score, torch.Generator().manual_seed(0), sampler.params)
    reference = group(engine, examples, score, torch.Generator().manual_seed(0), group.params)
    assert ours.completions == reference.completions  # same generation as the built-in sampler
    uniform = ours.group_ids == 0
    assert float(ours.mask[uniform].sum()) == 0.0
    torch.testing.assert_close(ours.mask[~uniform], reference.mask[~uniform])
    torch.testing.assert_close(ours.rewards, reference.rewards)  # rewards are kept
