"""Config layering, component swapping and error messages."""

from __future__ import annotations

import copy
import math
import re
import time
import types

import pytest
import torch

import rlsdk
from rlsdk import ConfigError
from rlsdk.config import (
    DEFAULTS,
    load_config,
    load_yaml,
    load_yaml_text,
    parse_overrides,
    reward_specs,
    validate_config,
)
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


def test_swapping_a_component_keeps_the_options_it_shares(registry):
    # An ablation arm changes one thing: reinforce keeps GRPO's aggregation, KL settings and entropy
    # bonus, and drops the clipping options, which it does not take.
    grpo = load_config(registry)
    config = load_config(registry, overrides=["loss.name=reinforce"])
    taken = {"kl_coef", "kl_estimator", "kl_input_clamp", "kl_output_clamp", "entropy_coef", "agg"}
    assert config["loss"] == {"name": "reinforce", **{k: grpo["loss"][k] for k in taken}}
    assert config["loss"]["entropy_coef"] == grpo["loss"]["entropy_coef"] != 0
    assert list(config["loss"])[0] == "name"


def test_an_option_given_with_the_new_name_wins(registry):
    config = load_config(registry, overrides=["loss.name=reinforce", "loss.agg=token-mean"])
    assert config["loss"]["agg"] == "token-mean"


def test_swapping_to_a_component_with_no_options_drops_them_all(registry):
    config = load_config(registry, overrides=["advantage.name=rloo"])
    assert config["advantage"] == {"name": "rloo"}


def test_defaults_carry_no_algorithm_options():
    assert DEFAULTS["loss"] == {"name": "clipped_pg"} and DEFAULTS["advantage"] == {"name": "grpo"}


@pytest.mark.parametrize("algorithm", ["grpo", "dr_grpo", "rloo", "reinforce_pp"])
def test_presets_state_every_option_of_their_algorithm(registry, algorithm):
    import inspect

    sections = registry.factory("algorithm", algorithm)()
    for kind in ("advantage", "loss"):
        spec = dict(sections[kind])
        factory = registry.factory(kind, spec.pop("name"))
        assert set(spec) == set(inspect.signature(factory).parameters), (algorithm, kind)


def test_algorithm_switch_carries_nothing_from_the_default_preset(registry):
    # The presets state every option, so algorithm=rloo takes nothing from grpo's sections.
    rloo = load_config(registry, overrides=["algorithm=rloo"])
    assert rloo["loss"] == {**registry.factory("algorithm", "rloo")()["loss"]}
    assert rloo["advantage"] == {"name": "rloo"}


def test_a_bad_option_fails_when_the_config_is_loaded(registry):
    # The cheap components are built while the config is validated, so their factories' checks run.
    with pytest.raises(ConfigError, match="advantage.eps must be a finite number > 0, got -1"):
        load_config(registry, overrides=["advantage.eps=-1"])
    with pytest.raises(ConfigError, match="sampler.n"):
        load_config(registry, overrides=["sampler.n=0"])


def test_sources_say_where_each_value_came_from(registry, tmp_path):
    from rlsdk.config import dump_yaml, resolve_config

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 11\n")
    config, sources = resolve_config(registry, path, ["loss.name=reinforce"])
    assert sources["train.steps"] == f"file {path}"
    assert sources["loss.name"] == "command line"
    assert sources["loss.entropy_coef"] == "algorithm 'grpo'"
    assert "train.lr" not in sources  # a default
    text = dump_yaml(config, sources)
    assert f"  steps: 11  # file {path}" in text.splitlines()
    assert "  lr: 0.001  # default" in text.splitlines()
    assert "  entropy_coef: 0.03  # algorithm 'grpo'" in text.splitlines()
    assert load_yaml_text(text, "the dump") == config


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
        (["train.steps=0"], "train.steps (from command line) must be an integer >= 1"),
        (["train.lr=-1"], "train.lr (from command line) must be a finite number > 0"),
        (["seed=abc"], "seed (from command line) must be an integer >= 0"),
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


# --------------------------------------------------------------------------------------------------
# Whole-config validation at load time


@pytest.mark.parametrize(
    ("overrides", "key", "bad", "expected"),
    [
        # train: learning rate, AdamW, clipping
        (["train.lr=.nan"], "train.lr", "nan", "must be a finite number > 0 and <= 1"),
        ({"train": {"lr": math.nan}}, "train.lr", "nan", "must be a finite number > 0 and <= 1"),
        ({"train": {"lr": math.inf}}, "train.lr", "inf", "must be a finite number > 0 and <= 1"),
        (["train.lr=inf"], "train.lr", "'inf'", "must be a finite number"),
        (["train.lr=1e40"], "train.lr", "1e+40", "<= 1"),
        (["train.lr=0"], "train.lr", "0", "> 0"),
        (["train.lr=true"], "train.lr", "True", "must be a finite number"),
        (["train.betas=[2,0.9]"], "train.betas", "[2, 0.9]", "a list of two numbers, each >= 0 and < 1"),
        (["train.betas=[0.9]"], "train.betas", "[0.9]", "a list of two numbers"),
        (["train.betas=0.9"], "train.betas", "0.9", "a list of two numbers"),
        (["train.betas=[0.9,1.0]"], "train.betas", "[0.9, 1.0]", "< 1"),
        (["train.weight_decay=-1"], "train.weight_decay", "-1", "must be a finite number >= 0"),
        ({"train": {"weight_decay": math.nan}}, "train.weight_decay", "nan", "must be a finite number >= 0"),
        (["train.max_grad_norm=-1"], "train.max_grad_norm", "-1", "a finite number > 0, or 0 or null to disable"),
        (["train.max_grad_norm=abc"], "train.max_grad_norm", "'abc'", "a finite number > 0, or 0 or null to disable"),
        (["train.max_grad_norm=false"], "train.max_grad_norm", "False", "or 0 or null"),
        (["train.min_lr_ratio=true"], "train.min_lr_ratio", "True", "must be a finite number >= 0 and <= 1"),
        (["train.min_lr_ratio=2"], "train.min_lr_ratio", "2", "<= 1"),
        (["train.lr_schedule=cosin"], "train.lr_schedule", "'cosin'", "did you mean 'cosine'"),
        (["train.reference=abc"], "train.reference", "'abc'", "must be true or false"),
        (["train.reference=1"], "train.reference", "1", "must be true or false"),
        (["train.threads=-1"], "train.threads", "-1", "must be an integer >= 0"),
        (["train.threads=2.5"], "train.threads", "2.5", "must be an integer >= 0"),
        (["train.warmup_steps=-1"], "train.warmup_steps", "-1", "must be an integer >= 0"),
        (["train.epochs=true"], "train.epochs", "True", "must be an integer >= 1"),
        (["train.micro_batches=0"], "train.micro_batches", "0", "must be an integer >= 1"),
        # train.device
        (["train.device=gpu"], "train.device", "'gpu'", "must be a torch device such as 'cpu'"),
        (["train.device=3"], "train.device", "3", "must be a torch device"),
        # eval
        (["eval.temperature=-1"], "eval.temperature", "-1", "must be a finite number >= 0"),
        ({"eval": {"temperature": math.inf}}, "eval.temperature", "inf", "must be a finite number >= 0"),
        (["eval.size=-5"], "eval.size", "-5", "an integer >= 1, or 0 or null for every held-out example"),
        (["eval.size=2.5"], "eval.size", "2.5", "an integer >= 1"),
        (["eval.every=-1"], "eval.every", "-1", "must be an integer >= 0"),
        # run
        (["run.checkpoint_every=-1"], "run.checkpoint_every", "-1", "must be an integer >= 0"),
        (["run.keep_checkpoints=0"], "run.keep_checkpoints", "0", "must be an integer >= 1"),
        (["run.progress=maybe"], "run.progress", "'maybe'", "must be true or false"),
        (["run.plot=1"], "run.plot", "1", "must be true or false"),
        (["run.root=''"], "run.root", "''", "must be a non-empty string"),
        (["run.root=null"], "run.root", "None", "must be a non-empty string"),
        (["run.dir=3"], "run.dir", "3", "must be a non-empty string or null"),
        # seed, open sections, reward weights
        (["seed=-1"], "seed", "-1", "must be an integer >= 0"),
        (["seed=1.5"], "seed", "1.5", "must be an integer >= 0"),
        (["trackers=abc"], "trackers", "'abc'", "must be a mapping"),
        (["trackers.console=3"], "trackers.console", "3", "must be a mapping of the tracker's options or null"),
        (["logprob=3"], "logprob", "3", "must be a mapping"),
        ({"rewards": {"exact_match": math.nan}}, "rewards.exact_match.weight", "nan", "must be a finite number"),
    ],
)
def test_every_setting_is_checked_at_load_time(registry, overrides, key, bad, expected):
    """Each bad value is a one-line ConfigError naming the key, where it came from, the value and what is valid."""
    with pytest.raises(ConfigError) as info:
        load_config(registry, overrides=overrides)
    message = str(info.value)
    assert "\n" not in message
    assert expected in message, message
    assert key in message and f"got {bad}" in message, message
    if key.partition(".")[0] in ("train", "eval", "run", "seed"):
        assert f"{key} (from command line)" in message, message


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.max_grad_norm=0"],
        ["train.max_grad_norm=null"],
        ["eval.size=0"],
        ["eval.size=null"],
        ["eval.size=1"],
        ["train.betas=[0.0,0.999]"],
        ["train.lr=1"],
        ["run.dir=somewhere"],
        ["train.threads=0"],
        ["trackers.console=null"],
    ],
)
def test_valid_edge_values_load(registry, overrides):
    load_config(registry, overrides=overrides)


def test_source_names_the_file(registry, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: .inf\n")
    with pytest.raises(
        ConfigError, match=re.escape(f"train.lr (from file {path}) must be a finite number > 0 and <= 1, got inf")
    ):
        load_config(registry, path)
    # a later layer that fixes the value wins, and the message names the layer that set the bad value
    load_config(registry, path, ["train.lr=0.01"])


def test_validate_config_checks_a_hand_made_config(registry):
    config = load_config(registry)
    validate_config(config, registry)
    bad = copy.deepcopy(config)
    bad["train"]["lr"] = math.nan
    with pytest.raises(ConfigError, match=r"^train\.lr must be a finite number > 0 and <= 1, got nan$"):
        validate_config(bad, registry)
    del bad["train"]["lr"]
    with pytest.raises(ConfigError, match="train lacks the key"):
        validate_config(bad, registry)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_device_on_a_machine_without_cuda(registry, device):
    with pytest.raises(ConfigError) as info:
        load_config(registry, overrides=[f"train.device={device}"])
    message = str(info.value)
    assert f"train.device (from command line) is {device!r}" in message and "no CUDA GPU" in message
    assert "available here: cpu" in message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_device_index_beyond_the_gpus(registry):
    count = torch.cuda.device_count()
    load_config(registry, overrides=["train.device=cuda:0"])
    with pytest.raises(ConfigError, match=f"has {count} CUDA GPU"):
        load_config(registry, overrides=[f"train.device=cuda:{count}"])


@pytest.mark.skipif(
    getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
    reason="checks a machine without MPS",
)
def test_mps_device_without_mps(registry):
    with pytest.raises(ConfigError, match=r"train\.device \(from command line\) is 'mps'.*not available here"):
        load_config(registry, overrides=["train.device=mps"])


# --------------------------------------------------------------------------------------------------
# Files and overrides


@pytest.mark.parametrize(
    ("text", "line", "key", "first"),
    [
        ("algorithm: grpo\ntrain:\n  steps: 3\nalgorithm: rloo\n", 4, "algorithm", 1),
        ("train:\n  steps: 3\n  lr: 0.01\n  steps: 4\n", 4, "steps", 2),
        ("rewards:\n  char_match: {weight: 1.0, weight: 2.0}\n", 2, "weight", 2),
        ("task:\n  name: reverse\narms:\n  a: [x]\n  b: []\n  a: [y]\n", 6, "a", 4),
    ],
)
def test_duplicate_yaml_keys_are_rejected(registry, tmp_path, text, line, key, first):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    message = f"config file {str(path)!r} line {line}: key {key!r} appears twice (first on line {first})"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(registry, path)


def test_yaml_merge_keys_are_not_duplicates():
    data = load_yaml_text("a: &x {p: 1, q: 2}\nb:\n  <<: *x\n  p: 3\n", "test")
    assert data == {"a": {"p": 1, "q": 2}, "b": {"p": 3, "q": 2}}
    with pytest.raises(
        ConfigError, match=re.escape("experiment file 'e.yaml' line 2: key 'arms' appears twice (first on line 1)")
    ):
        load_yaml_text("arms: {}\narms: {}\n", "experiment file 'e.yaml'")
    with pytest.raises(ConfigError, match="experiment file 'e.yaml' is not valid YAML"):
        load_yaml_text("a: [unclosed\n", "experiment file 'e.yaml'")


def test_non_utf8_file_and_folder(registry, tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("task:\n  name: reverse\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=re.escape(f"config file {str(latin)!r} is not UTF-8 text: ")):
        load_config(registry, latin)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbftrain:\n  steps: 3\n")
    assert load_yaml(bom) == {"train": {"steps": 3}}
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    with pytest.raises(ConfigError, match=re.escape(f"config file {str(folder)!r} is a folder, not a file")):
        load_config(registry, folder)


@pytest.mark.parametrize(
    "item",
    ["run.root=${oc.env:HOME}", "train.lr=${train.steps}", "task.name=x${oc.env:USER}y", "train.betas=[0.9,${x}]"],
)
def test_interpolation_in_an_override_is_refused(registry, item):
    message = f"override {item!r}: interpolations (${{...}}) are not supported in overrides; write the value itself"
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_overrides([item])
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(registry, overrides=[item])


# --------------------------------------------------------------------------------------------------
# The check_config hook


def _registry_with(module_name: str, check):
    plugin = types.ModuleType(module_name)
    plugin.check_config = rlsdk.hookimpl(check)
    return get_registry(extra=[plugin])


def test_check_config_hook_sees_the_config_and_its_errors_pass_through():
    seen = []

    def check(config):
        seen.append(config["train"]["steps"])
        if config["train"]["steps"] == 13:
            raise ConfigError("train.steps=13 is unlucky")
        config["train"]["steps"] = 99  # a copy: changes nothing

    registry = _registry_with("lucky_plugin", check)
    assert load_config(registry, overrides=["train.steps=12"])["train"]["steps"] == 12
    assert seen == [12]
    with pytest.raises(ConfigError, match="^train.steps=13 is unlucky$"):
        load_config(registry, overrides=["train.steps=13"])


def test_check_config_hook_that_crashes_is_reported_with_the_plugin_name():
    def check(config):
        return config["no_such_section"]["x"]

    registry = _registry_with("crashing_plugin", check)
    with pytest.raises(ConfigError) as info:
        load_config(registry)
    message = str(info.value)
    assert "plugin crashing_plugin" in message and "KeyError" in message and "'no_such_section'" in message
    assert isinstance(info.value.__cause__, KeyError)


def test_check_config_runs_after_the_per_key_checks():
    def check(config):
        raise AssertionError("must not run")

    registry = _registry_with("late_plugin", check)
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(registry, overrides=["train.lr=-1"])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["sampler.n=1"],
            "advantage 'grpo' normalises rewards within each prompt's group, but sampler.n=1 gives groups of one",
        ),
        (["algorithm=dr_grpo", "sampler.n=1"], "advantage 'grpo' normalises rewards"),
        (["advantage.name=grpo_passk", "sampler.n=1"], "advantage 'grpo_passk'"),
        (["advantage.name=grpo_passk", "advantage.eps=1e-6", "sampler.n=1"], "set sampler.n >= 2"),
        (["algorithm=rloo", "sampler.n=1"], "advantage 'rloo'"),
        (["advantage.name=opo", "sampler.n=1"], "advantage 'opo'"),
    ],
)
def test_group_advantages_need_groups_of_two(registry, overrides, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)) as info:
        load_config(registry, overrides=overrides)
    assert "sampler.n=1" in str(info.value) and "sampler.n >= 2" in str(info.value)


@pytest.mark.parametrize("mode", ["reward", "zero"])
def test_grpo_single_group_set_explicitly_allows_groups_of_one(registry, mode):
    config = load_config(registry, overrides=["sampler.n=1", f"advantage.single_group={mode}"])
    assert config["sampler"]["n"] == 1
    load_config(registry, overrides=["sampler.n=2"])
    load_config(registry, overrides=["advantage.name=reinforce_plus_plus", "sampler.n=1"])


def test_tiny_policy_too_big_for_memory_fails_fast_without_allocating(registry):
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(registry, overrides=["policy.d_model=1000000"])
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert message.startswith(
        "policy (tiny) with d_model=1000000, n_layers=1 (parameters, gradients, Adam state and the reference)"
    )
    assert re.search(r"needs about \d+ TiB; this machine has [\d.]+ [KMGT]iB; lower policy\.d_model", message), message
    without_ref = pytest.raises(ConfigError, match=r"Adam state\) needs about")
    with without_ref:
        load_config(registry, overrides=["policy.d_model=1000000", "train.reference=false"])


def test_tiny_policy_parameter_count_matches_the_model():
    from rlsdk_plugins.tiny_policy import TinyPolicy, parameter_count

    policy = TinyPolicy(alphabet="abc", d_model=16, n_layers=3, n_heads=2, max_len=10)
    assert parameter_count(5, 16, 3, 10) == sum(p.numel() for p in policy.parameters())


def test_tiny_policy_options_and_max_new_tokens_are_checked_at_load(registry):
    with pytest.raises(ConfigError, match=re.escape("sampler.max_new_tokens=64 does not fit policy.max_len=64 (tiny)")):
        load_config(registry, overrides=["sampler.max_new_tokens=64"])
    with pytest.raises(ConfigError, match=re.escape("max_new_tokens must be < 8")):
        load_config(registry, overrides=["policy.max_len=8", "sampler.max_new_tokens=8"])
    load_config(registry, overrides=["policy.max_len=8", "sampler.max_new_tokens=7"])
    with pytest.raises(ConfigError, match=re.escape("policy.n_heads=3 must divide policy.d_model=128")):
        load_config(registry, overrides=["policy.n_heads=3"])


def test_check_memory_formats_sizes():
    from rlsdk.validation import _format_bytes, check_memory

    assert [_format_bytes(n) for n in (512, 1536, 24 * 2**30, 218 * 2**40)] == ["512 B", "1.5 KiB", "24 GiB", "218 TiB"]
    check_memory(1024, "a kibibyte", "cpu")
    check_memory(2**80, "anything", "meta")  # unknown total: not checked
    with pytest.raises(ConfigError, match=r"^a zebibyte needs about 1048576 PiB; this machine has .*; buy more$"):
        check_memory(2**70, "a zebibyte", "cpu", hint="buy more")


def test_resume_base_missing_a_newer_key_takes_its_default(registry):
    base = load_config(registry)
    del base["train"]["threads"], base["run"]["plot"]
    again = load_config(registry, base=base)
    assert again["train"]["threads"] == DEFAULTS["train"]["threads"] and again["run"]["plot"] is True


@pytest.mark.parametrize("smooth", [0, -1, True, 2.0])
def test_report_smooth_must_be_a_positive_int(tmp_path, smooth):
    from rlsdk.research.report import report

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "reward/mean": 0.5}\n')
    with pytest.raises(
        ConfigError,
        match=re.escape(f"smooth must be an integer >= 1 (a window of logged steps; 1: none), got {smooth!r}"),
    ):
        report(tmp_path, smooth=smooth)
