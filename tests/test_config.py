"""Config layering, component swapping and error messages."""

from __future__ import annotations

import pytest

from rlsdk import ConfigError
from rlsdk.config import DEFAULTS, load_config, parse_overrides, reward_specs
from rlsdk.plugins import get_registry


@pytest.fixture(scope="module")
def registry():
    return get_registry()


def test_defaults_take_the_preset(registry):
    config = load_config(registry)
    assert config["algorithm"] == "grpo"
    assert config["advantage"]["name"] == "grpo"
    # The grpo preset sets the original GRPO aggregation; the defaults alone do not.
    assert config["loss"]["agg"] == "seq-mean-token-mean"
    assert config["train"]["steps"] == DEFAULTS["train"]["steps"]


def test_algorithm_selects_another_preset(registry):
    config = load_config(registry, overrides=["algorithm=dr_grpo"])
    assert config["advantage"]["norm_std"] is False
    assert config["loss"]["agg"] == "seq-mean-token-sum-norm"


def test_overrides_are_typed(registry):
    config = load_config(registry, overrides=["train.steps=7", "loss.eps_high=0.28", "train.reference=false"])
    assert config["train"]["steps"] == 7
    assert config["loss"]["eps_high"] == 0.28
    assert config["train"]["reference"] is False


def test_swapping_a_component_drops_the_presets_options(registry):
    # clipped_pg options such as eps_low are not options of reinforce.
    config = load_config(registry, overrides=["loss.name=reinforce", "loss.agg=token-mean"])
    assert config["loss"] == {"name": "reinforce", "agg": "token-mean"}


def test_yaml_file_then_overrides(registry, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("algorithm: rloo\ntrain:\n  steps: 11\nrewards:\n  format: {weight: 0.5, pattern: '\\d+'}\n")
    config = load_config(registry, path, ["train.steps=12"])
    assert config["advantage"]["name"] == "rloo"
    assert config["train"]["steps"] == 12
    names = [name for name, _, _ in reward_specs(config)]
    assert "format" in names and "char_match" in names
    assert dict((n, w) for n, w, _ in reward_specs(config))["format"] == 0.5


def test_reward_weight_shorthand(registry):
    config = load_config(registry, overrides=["rewards.exact_match=2.5"])
    assert dict((n, w) for n, w, _ in reward_specs(config))["exact_match"] == 2.5


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (["train.stpes=3"], "did you mean 'steps'"),
        (["trian.steps=3"], "did you mean 'train'"),
        (["loss.name=clipped_gp"], "did you mean 'clipped_pg'"),
        (["advantage.name=grpp"], "valid: "),
        (["loss.eps_lo=0.1"], "did you mean 'eps_low'"),
        (["rewards.exact_mach=1.0"], "did you mean 'exact_match'"),
        (["algorithm=rlooo"], "did you mean 'rloo'"),
        (["logprob.backend=chunkd"], "did you mean 'chunked'"),
        (["train.steps=0"], "train.steps must be an integer >= 1"),
        (["train.lr=-1"], "train.lr must be a positive number"),
        (["seed=abc"], "seed must be a non-negative integer"),
    ],
)
def test_bad_config_is_a_clear_error(registry, override, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_config(registry, overrides=override)


def test_unknown_component_lists_valid_names(registry):
    with pytest.raises(ConfigError) as info:
        load_config(registry, overrides=["sampler.name=nope"])
    message = str(info.value)
    assert "sampler.name" in message and "'nope'" in message and "group" in message


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.steps"])


def test_missing_and_malformed_files(registry, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(registry, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(registry, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(registry, listy)


def test_resume_base_is_kept(registry):
    base = load_config(registry, overrides=["algorithm=rloo", "train.steps=5"])
    again = load_config(registry, overrides=["train.steps=9"], base=base)
    assert again["advantage"]["name"] == "rloo" and again["train"]["steps"] == 9
