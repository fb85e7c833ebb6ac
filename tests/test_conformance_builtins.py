"""Every built-in component passes the conformance checks of rlsdk.testing.

Parametrized by the names in a registry of rlsdk's own plugins, so a newly registered built-in is
covered without editing this file (give it options here only if its defaults do not fit tiny inputs).
"""

from __future__ import annotations

import inspect
import json

import pytest

from rlsdk.functional import AGGREGATION_MODES
from rlsdk.testing import (
    check_advantage,
    check_logprob_backend,
    check_loss,
    check_reward,
    check_sampler,
    check_task,
    make_registry,
)

REGISTRY = make_registry()

# Options beyond the defaults that each component is also checked with (only those its factory accepts).
LOSS_VARIANTS = [
    *({"agg": mode} for mode in AGGREGATION_MODES),
    {"kl_coef": 0.1},
    {"kl_coef": 0.05, "kl_estimator": "k2+", "entropy_coef": 0.01, "agg": "seq-mean-token-sum-norm"},
    {"entropy_coef": -0.02, "agg": "seq-mean-token-mean"},
    {"dual_clip_c": 3.0, "eps_high": 0.28},
    {"delta": 1.5, "logratio_clamp": None},
]
ADVANTAGE_VARIANTS = [
    {"norm_std": False},
    {"single_group": "zero"},
    {"kl_coef": 0.1, "gamma": 0.9},
    {"style": "openrlhf"},
]
# Rewards whose defaults are sized for real tasks get options that fit the tiny default inputs.
REWARD_OPTIONS = {
    "overlong": {"max_length": 3, "cache_length": 2},
    "length_penalty": {"max_length": 4},
    "format": {"pattern": r"\d+"},
}
SAMPLER_VARIANTS = [{"n": 2, "max_new_tokens": 4}, {"n": 2, "max_new_tokens": 3, "temperature": 0.0, "top_p": 0.5}]
SKIP_TASKS = {"jsonl"}  # needs a file: checked in test_jsonl_task


def _accepts(kind: str, name: str, options: dict) -> bool:
    params = inspect.signature(REGISTRY.factory(kind, name)).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return True
    return set(options) <= set(params)


def _cases(kind: str, variants: list[dict], base: dict | None = None) -> list:
    cases = []
    for name in REGISTRY.names(kind):
        for options in [{}, *variants]:
            options = {**(base or {}), **options}
            if options and not _accepts(kind, name, options):
                continue
            label = ",".join(f"{k}={v}" for k, v in options.items()) or "defaults"
            cases.append(pytest.param(name, options, id=f"{name}[{label}]"))
    return cases


@pytest.mark.parametrize(("name", "options"), _cases("loss", LOSS_VARIANTS))
def test_loss(name, options):
    check_loss(REGISTRY.create("loss", name, options), additive_metrics=True)


@pytest.mark.parametrize(("name", "options"), _cases("advantage", ADVANTAGE_VARIANTS))
def test_advantage(name, options):
    check_advantage(REGISTRY.create("advantage", name, options))


@pytest.mark.parametrize("name", REGISTRY.names("reward"))
def test_reward(name):
    check_reward(REGISTRY.create("reward", name, REWARD_OPTIONS.get(name, {})))


@pytest.mark.parametrize(("name", "options"), [c for c in _cases("sampler", SAMPLER_VARIANTS) if c.values[1]])
def test_sampler(name, options):
    check_sampler(REGISTRY.create("sampler", name, options))


@pytest.mark.parametrize("name", [n for n in REGISTRY.names("task") if n not in SKIP_TASKS])
def test_task(name):
    check_task(REGISTRY.create("task", name, {}))


def test_jsonl_task(tmp_path):
    rows = [{"prompt": f"rev {i:03d}=", "answer": f"{i:03d}"[::-1]} for i in range(10)]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    check_task(REGISTRY.create("task", "jsonl", {"path": str(path), "eval_fraction": 0.3}))


@pytest.mark.parametrize("name", REGISTRY.names("logprob_backend"))
def test_logprob_backend(name):
    import torch

    backend = REGISTRY.create("logprob_backend", name, {})
    if not getattr(backend, "supports", lambda device: True)(torch.device("cpu")):
        pytest.skip(f"logprob backend {name!r} does not run on the CPU")
    check_logprob_backend(backend)
    if _accepts("logprob_backend", name, {"chunk_size": 4}):  # several chunks over the 13-token vocabulary
        check_logprob_backend(REGISTRY.create("logprob_backend", name, {"chunk_size": 4}))


def test_every_checked_kind_has_builtins():
    """Guards the parametrization: an empty registry would make every test above vanish silently."""
    for kind in ("loss", "advantage", "reward", "sampler", "task", "logprob_backend"):
        assert REGISTRY.names(kind), kind
    checked = [c.values[1] for c in _cases("loss", LOSS_VARIANTS) if c.values[0] == "clipped_pg"]
    assert {o.get("agg") for o in checked} >= set(AGGREGATION_MODES)
    assert any(o.get("kl_coef") and o.get("entropy_coef") for o in checked)
