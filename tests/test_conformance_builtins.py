"""Every built-in component passes the conformance checks of rlsdk.testing.

Parametrized by the kinds of :data:`rlsdk.kinds.KINDS` that name a ``check`` and the names in a
registry of rlsdk's own plugins, so a newly registered built-in, or a new kind with a check, is
covered without editing this file (give a component options here only if its defaults do not fit
tiny inputs).
"""

from __future__ import annotations

import inspect
import json

import pytest
import torch

import rlsdk.testing
from rlsdk.functional import AGGREGATION_MODES
from rlsdk.kinds import KINDS, member
from rlsdk.testing import check_task, make_registry

REGISTRY = make_registry()
#: The kinds with a conformance check.
CHECKED = [spec for spec in KINDS.values() if spec.check]

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
BACKEND_VARIANTS = [{"chunk_size": 4}]  # several chunks over the 13-token vocabulary
VARIANTS = {
    "loss": LOSS_VARIANTS,
    "advantage": ADVANTAGE_VARIANTS,
    "sampler": SAMPLER_VARIANTS,
    "logprob_backend": BACKEND_VARIANTS,
}
#: (kind, name) -> the options it is checked with instead of its defaults.
OPTIONS = {("reward", name): options for name, options in REWARD_OPTIONS.items()}
#: Kinds checked with their variants only (the group sampler's defaults, n=8 and 16 tokens, are slow).
VARIANTS_ONLY = {"sampler"}
#: Keyword arguments of each kind's check.
CHECK_OPTIONS = {"loss": {"additive_metrics": True}}
SKIP = {("task", "jsonl")}  # needs a file: checked in test_jsonl_task


def _accepts(kind: str, name: str, options: dict) -> bool:
    params = inspect.signature(REGISTRY.factory(kind, name)).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return True
    return set(options) <= set(params)


def _cases(kind: str, variants: list[dict], base: dict | None = None) -> list:
    cases = []
    for name in REGISTRY.names(kind):
        if (kind, name) in SKIP:
            continue
        for options in ([] if kind in VARIANTS_ONLY else [{}]) + list(variants):
            options = {**(base or {}), **OPTIONS.get((kind, name), {}), **options}
            if options and not _accepts(kind, name, options):
                continue
            label = ",".join(f"{k}={v}" for k, v in options.items()) or "defaults"
            cases.append(pytest.param(kind, name, options, id=f"{kind}:{name}[{label}]"))
    return cases


ALL_CASES = [case for spec in CHECKED for case in _cases(spec.name, VARIANTS.get(spec.name, []))]


@pytest.mark.parametrize(("kind", "name", "options"), ALL_CASES)
def test_builtin_conforms(kind, name, options):
    component = REGISTRY.create(kind, name, options)
    if kind == "logprob_backend" and not member(kind, component, "supports")(torch.device("cpu")):
        pytest.skip(f"logprob backend {name!r} does not run on the CPU")
    getattr(rlsdk.testing, KINDS[kind].check)(component, **CHECK_OPTIONS.get(kind, {}))


def test_jsonl_task(tmp_path):
    rows = [{"prompt": f"rev {i:03d}=", "answer": f"{i:03d}"[::-1]} for i in range(10)]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    check_task(REGISTRY.create("task", "jsonl", {"path": str(path), "eval_fraction": 0.3}))


def test_every_checked_kind_has_builtins():
    """Guards the parametrization: an empty registry would make every test above vanish silently."""
    kinds = {"loss", "advantage", "reward", "sampler", "engine", "task", "logprob_backend"}
    assert {spec.name for spec in CHECKED} >= kinds
    for spec in CHECKED:
        assert callable(getattr(rlsdk.testing, spec.check, None)), spec.check
        assert spec.check in rlsdk.testing.__all__, spec.check
        assert any(case.values[0] == spec.name for case in ALL_CASES), spec.name
    assert "inprocess" in REGISTRY.names("engine")
    checked = [c.values[2] for c in ALL_CASES if c.values[:2] == ("loss", "clipped_pg")]
    assert {o.get("agg") for o in checked} >= set(AGGREGATION_MODES)
    assert any(o.get("kl_coef") and o.get("entropy_coef") for o in checked)
