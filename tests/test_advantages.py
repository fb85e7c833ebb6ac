"""Advantage estimators (grpo, grpo_passk, rloo, opo, reinforce_plus_plus[_baseline]).

Every estimator is checked against a float64 reference written from the formula with plain Python
loops from the formula in its docstring (and the paper it cites), plus edge cases and hypothesis properties.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rlsdk
import rlsdk.kinds
from rlsdk import ConfigError, RolloutBatch

SETTINGS = settings(max_examples=40, deadline=None)

ESTIMATORS = ["grpo", "grpo_passk", "rloo", "opo", "reinforce_plus_plus", "reinforce_plus_plus_baseline"]
OWNERS = {
    "grpo": "rlsdk:grpo",
    "grpo_passk": "rlsdk:grpo",
    "rloo": "rlsdk:rloo",
    "opo": "rlsdk:opo",
    "reinforce_plus_plus": "rlsdk:reinforce_pp",
    "reinforce_plus_plus_baseline": "rlsdk:reinforce_pp",
}


# --------------------------------------------------------------------------------------------------
# Float64 references, one loop per formula


def _groups(group_ids: list[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids):
        groups.setdefault(g, []).append(i)
    return groups


def _std(xs: list[float], unbiased: bool) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mu = sum(xs) / n
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1 if unbiased else n))


def _broadcast(scores: list[float], mask: list[list[float]]) -> np.ndarray:
    return np.array([[s * m if m > 0 else 0.0 for m in row] for s, row in zip(scores, mask)], dtype=np.float64)


def ref_grpo(rewards, group_ids, mask, eps=1e-6, norm_std=True, unbiased=True, single_group="reward"):
    scores = [0.0] * len(rewards)
    for rows in _groups(group_ids).values():
        rs = [rewards[i] for i in rows]
        if len(rows) == 1:
            mu, sigma = (0.0, 1.0) if single_group == "reward" else (None, None)
        else:
            mu, sigma = sum(rs) / len(rs), _std(rs, unbiased)
        for i in rows:
            if mu is None:
                scores[i] = 0.0
            elif norm_std:
                scores[i] = (rewards[i] - mu) / (sigma + eps)
            else:
                scores[i] = rewards[i] - mu
    return _broadcast(scores, mask)


def ref_passk(rewards, group_ids, mask, eps=1e-6, norm_std=True, unbiased=True):
    scores = [0.0] * len(rewards)
    for rows in _groups(group_ids).values():
        ordered = sorted(rows, key=lambda i: (-rewards[i], i))  # best first, ties by row
        best, second = ordered[0], ordered[1]
        gap = rewards[best] - rewards[second]
        if norm_std:
            gap /= _std([rewards[i] for i in rows], unbiased) + eps
        scores[best] = gap
    return _broadcast(scores, mask)


def ref_rloo(rewards, group_ids, mask):
    scores = [0.0] * len(rewards)
    for rows in _groups(group_ids).values():
        for i in rows:
            others = [rewards[j] for j in rows if j != i]
            scores[i] = rewards[i] - sum(others) / len(others) if others else rewards[i]
    return _broadcast(scores, mask)


def ref_opo(rewards, group_ids, mask):
    lengths = [sum(row) for row in mask]
    scores = [0.0] * len(rewards)
    for rows in _groups(group_ids).values():
        total = sum(lengths[j] for j in rows)
        b = sum(lengths[j] * rewards[j] for j in rows) / total if len(rows) > 1 and total > 0 else 0.0
        for i in rows:
            scores[i] = rewards[i] - b
    return _broadcast(scores, mask)


def ref_whiten(values: np.ndarray, mask, style="verl") -> np.ndarray:
    xs = [values[i][t] for i, row in enumerate(mask) for t, m in enumerate(row) if m > 0]
    out = np.zeros_like(values)
    if not xs:
        return out
    n = len(xs)
    mu = sum(xs) / n
    sq = sum((x - mu) ** 2 for x in xs)
    if style == "verl":
        scale = 1.0 / math.sqrt(sq / max(n - 1, 1) + 1e-8)
    else:
        scale = 1.0 / math.sqrt(max(sq / n, 1e-8))
    for i, row in enumerate(mask):
        for t, m in enumerate(row):
            if m > 0:
                out[i][t] = (values[i][t] - mu) * scale
    return out


def ref_reinforce_pp(rewards, mask, gamma=1.0, kl_coef=0.0, old=None, ref=None, style="verl"):
    returns = np.zeros((len(mask), len(mask[0]) if mask else 0))
    for i, row in enumerate(mask):
        valid = [t for t, m in enumerate(row) if m > 0]
        g = 0.0
        for t in reversed(valid):
            r = rewards[i] if t == valid[-1] else 0.0
            if kl_coef > 0:
                r -= kl_coef * (old[i][t] - ref[i][t])
            g = r + gamma * g
            returns[i][t] = g
    return ref_whiten(returns, mask, style)


def ref_reinforce_pp_baseline(rewards, group_ids, mask, style="verl"):
    scores = [0.0] * len(rewards)
    for rows in _groups(group_ids).values():
        mu = sum(rewards[j] for j in rows) / len(rows) if len(rows) > 1 else 0.0
        for i in rows:
            scores[i] = rewards[i] - mu
    return ref_whiten(_broadcast(scores, mask), mask, style)


def reference(name, batch: RolloutBatch, **options) -> np.ndarray:
    r = batch.rewards.double().tolist()
    g = batch.group_ids.tolist()
    m = batch.mask.double().tolist()
    if name == "grpo":
        return ref_grpo(r, g, m, **options)
    if name == "grpo_passk":
        return ref_passk(r, g, m, **options)
    if name == "rloo":
        return ref_rloo(r, g, m)
    if name == "opo":
        return ref_opo(r, g, m)
    if name == "reinforce_plus_plus":
        old = batch.old_logprobs.double().tolist() if batch.old_logprobs is not None else None
        ref = batch.ref_logprobs.double().tolist() if batch.ref_logprobs is not None else None
        return ref_reinforce_pp(r, m, old=old, ref=ref, **options)
    if name == "reinforce_plus_plus_baseline":
        return ref_reinforce_pp_baseline(r, g, m, **options)
    raise AssertionError(name)


def check(name: str, batch: RolloutBatch, atol: float = 1e-5, **options) -> torch.Tensor:
    out = rlsdk.create("advantage", name, **options)(batch)
    assert out.shape == batch.mask.shape
    assert out.dtype == (torch.float64 if batch.rewards.dtype == torch.float64 else torch.float32)
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.double().numpy(), reference(name, batch, **options), atol=atol, rtol=1e-5)
    return out


# --------------------------------------------------------------------------------------------------
# Fixtures and strategies


def make_batch(rewards, group_ids, mask, dtype=torch.float32, **extra) -> RolloutBatch:
    return RolloutBatch(
        rewards=torch.tensor(rewards, dtype=dtype),
        group_ids=torch.tensor(group_ids, dtype=torch.long),
        mask=torch.tensor(mask, dtype=torch.float32),
        **extra,
    )


@pytest.fixture
def batch() -> RolloutBatch:
    """Shuffled, non-contiguous group ids, ragged and empty masks, a group of one (id 3)."""
    return make_batch(
        rewards=[1.0, 0.0, 0.5, 2.0, -1.0, 1.0, 0.25, 3.0],
        group_ids=[42, 7, 42, 3, 7, 42, 7, 1000],
        mask=[
            [1, 1, 1, 0, 0],
            [1, 0, 0, 0, 0],
            [1, 1, 1, 1, 1],
            [1, 1, 0, 0, 0],
            [0, 0, 0, 0, 0],
            [1, 0, 1, 1, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 0, 0],
        ],
    )


def with_pairs(batch: RolloutBatch) -> RolloutBatch:
    """``batch`` without its groups of one (for grpo_passk)."""
    keep = torch.tensor([n > 1 for n in [(batch.group_ids == g).sum().item() for g in batch.group_ids]])
    return make_batch(batch.rewards[keep].tolist(), batch.group_ids[keep].tolist(), batch.mask[keep].tolist())


@st.composite
def batches(draw, min_group: int = 1, int_rewards: bool = False, nonempty: bool = False, dtype=torch.float32):
    n_groups = draw(st.integers(1, 4))
    sizes = [draw(st.integers(min_group, 5)) for _ in range(n_groups)]
    labels = draw(st.lists(st.integers(-1000, 1000), min_size=n_groups, max_size=n_groups, unique=True))
    group_ids = [labels[g] for g, n in enumerate(sizes) for _ in range(n)]
    b = len(group_ids)
    perm = draw(st.permutations(list(range(b))))
    group_ids = [group_ids[i] for i in perm]
    if int_rewards:
        reward = st.integers(-3, 3).map(float)
    else:
        reward = st.floats(-10, 10, allow_nan=False, width=32)
    rewards = draw(st.lists(reward, min_size=b, max_size=b))
    t = draw(st.integers(1, 6))
    row = st.lists(st.integers(0, 1), min_size=t, max_size=t)
    if nonempty:
        row = row.filter(any)
    mask = draw(st.lists(row, min_size=b, max_size=b))
    return make_batch(rewards, group_ids, mask, dtype=dtype)


def scalar_advantages(adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A_i recovered from a broadcast [B, T] advantage of non-empty rows."""
    return (adv.double() * (mask > 0)).sum(-1) / (mask > 0).sum(-1)


# --------------------------------------------------------------------------------------------------
# Registration and options


@pytest.mark.parametrize("name", ESTIMATORS)
def test_registered_through_entry_points(name):
    registry = rlsdk.get_registry()
    assert name in registry.names("advantage")
    assert registry.owner("advantage", name) == OWNERS[name]
    assert rlsdk.kinds.conform("advantage", rlsdk.create("advantage", name), name) is not None


@pytest.mark.parametrize(
    "name, options, words",
    [
        ("grpo", {"eps": 0.0}, ["advantage.eps", "0"]),
        ("grpo", {"eps": -1e-6}, ["advantage.eps", "-1e-06"]),
        ("grpo", {"eps": float("nan")}, ["advantage.eps", "nan"]),
        ("grpo", {"eps": "1e-6"}, ["advantage.eps", "'1e-6'"]),
        ("grpo", {"norm_std": "yes"}, ["advantage.norm_std", "'yes'", "true or false"]),
        ("grpo", {"unbiased": 1}, ["advantage.unbiased", "1"]),
        ("grpo", {"single_group": "mean"}, ["advantage.single_group", "'mean'", "'reward', 'zero'"]),
        ("grpo_passk", {"eps": True}, ["advantage.eps", "True"]),
        ("grpo_passk", {"norm_std": None}, ["advantage.norm_std", "None"]),
        ("reinforce_plus_plus", {"gamma": 1.5}, ["advantage.gamma", "1.5", "<= 1"]),
        ("reinforce_plus_plus", {"gamma": -0.1}, ["advantage.gamma", "-0.1"]),
        ("reinforce_plus_plus", {"kl_coef": -0.01}, ["advantage.kl_coef", "-0.01", ">= 0"]),
        ("reinforce_plus_plus", {"style": "trl"}, ["advantage.style", "'trl'", "'verl', 'openrlhf'"]),
        ("reinforce_plus_plus_baseline", {"style": "VERL"}, ["advantage.style", "'VERL'"]),
    ],
)
def test_bad_options_raise_config_error(name, options, words):
    with pytest.raises(ConfigError) as info:
        rlsdk.create("advantage", name, **options)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("name", ["rloo", "opo", "grpo"])
def test_unknown_option_is_rejected(name):
    with pytest.raises(ConfigError, match="unknown option 'epsilon'"):
        rlsdk.create("advantage", name, epsilon=1e-4)


# --------------------------------------------------------------------------------------------------
# Each estimator against its reference


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"eps": 1e-4},
        {"eps": 1e-9, "unbiased": False},
        {"norm_std": False},
        {"single_group": "zero"},
        {"norm_std": False, "single_group": "zero"},
    ],
)
def test_grpo_matches_reference(batch, options):
    check("grpo", batch, **options)


def test_grpo_known_values(batch):
    out = rlsdk.create("advantage", "grpo")(batch)
    # group 42: rewards 1, 0.5, 1 -> mean 5/6, unbiased std sqrt(1/12)
    sigma = math.sqrt(((1 / 6) ** 2 * 2 + (1 / 3) ** 2) / 2)
    assert out[0, 0].item() == pytest.approx((1 - 5 / 6) / (sigma + 1e-6), rel=1e-6)
    assert out[2, 4].item() == pytest.approx((0.5 - 5 / 6) / (sigma + 1e-6), rel=1e-6)
    # group of one (id 3): verl's mu = 0, sigma = 1
    assert out[3, :2].tolist() == pytest.approx([2.0 / (1 + 1e-6)] * 2, rel=1e-7)
    assert out[3, 2:].tolist() == [0.0, 0.0, 0.0]
    zero = rlsdk.create("advantage", "grpo", single_group="zero")(batch)
    assert zero[3].abs().sum().item() == 0.0


def test_dr_grpo_is_centred_reward(batch):
    out = rlsdk.create("advantage", "grpo", norm_std=False)(batch)
    # group 7: rewards 0, -1, 0.25 -> mean -0.25
    assert out[1, 0].item() == pytest.approx(0.25)
    assert out[6, :4].tolist() == pytest.approx([0.5] * 4)
    assert out[4].abs().sum().item() == 0.0  # empty mask


@pytest.mark.parametrize("options", [{}, {"norm_std": False}, {"eps": 1e-4, "unbiased": False}])
def test_grpo_passk_matches_reference(batch, options):
    out = check("grpo_passk", with_pairs(batch), **options)
    assert ((out != 0).any(-1).sum()) <= 3  # at most one row per group


def test_grpo_passk_known_values():
    b = make_batch([0.0, 1.0, 0.5, 2.0, 2.0], [5, 5, 5, 9, 9], [[1, 1], [1, 0], [1, 1], [1, 1], [1, 1]])
    out = rlsdk.create("advantage", "grpo_passk", norm_std=False)(b)
    assert out.tolist() == [[0.0, 0.0], [0.5, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]


def test_grpo_passk_needs_two_per_group(batch):
    with pytest.raises(ConfigError, match=r"at least 2 completions per prompt.*group 3.*sampler\.n"):
        rlsdk.create("advantage", "grpo_passk")(batch)


def test_rloo_matches_reference(batch):
    out = check("rloo", batch)
    # group of one: A = R
    assert out[3, :2].tolist() == [2.0, 2.0]
    # group 42: 1 - (0.5 + 1)/2
    assert out[0, 0].item() == pytest.approx(0.25)


def test_rloo_equals_scaled_centred_reward(batch):
    rloo = rlsdk.create("advantage", "rloo")(batch)
    dr = rlsdk.create("advantage", "grpo", norm_std=False)(batch)
    sizes = torch.tensor([(batch.group_ids == g).sum().item() for g in batch.group_ids], dtype=torch.float32)
    many = sizes > 1
    torch.testing.assert_close(rloo[many], (sizes / (sizes - 1))[many, None] * dr[many])


def test_opo_matches_reference(batch):
    out = check("opo", batch)
    # group 7: lengths 1, 0, 4 and rewards 0, -1, 0.25 -> b = 1/5
    assert out[1, 0].item() == pytest.approx(-0.2)
    assert out[6, 0].item() == pytest.approx(0.05)


def test_opo_all_empty_group_is_zero():
    b = make_batch([1.0, 3.0, 2.0], [0, 0, 1], [[0, 0], [0, 0], [1, 1]])
    out = rlsdk.create("advantage", "opo")(b)
    assert out.tolist() == [[0.0, 0.0], [0.0, 0.0], [2.0, 2.0]]


@pytest.mark.parametrize(
    "options",
    [{}, {"style": "openrlhf"}, {"gamma": 0.9}, {"gamma": 0.5, "kl_coef": 0.1}, {"kl_coef": 0.05, "style": "openrlhf"}],
)
def test_reinforce_pp_matches_reference(batch, options):
    g = torch.Generator().manual_seed(0)
    batch = batch.replace(
        old_logprobs=-torch.rand(batch.mask.shape, generator=g) * 3,
        ref_logprobs=-torch.rand(batch.mask.shape, generator=g) * 3,
    )
    est = rlsdk.create("advantage", "reinforce_plus_plus", **options)
    assert est.needs_ref_logprobs == (options.get("kl_coef", 0.0) > 0)
    check("reinforce_plus_plus", batch, **options)


def test_reinforce_pp_without_kl_is_whitened_outcome_on_right_padded_masks():
    b = make_batch([1.0, 0.0, 4.0], [0, 0, 1], [[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    out = rlsdk.create("advantage", "reinforce_plus_plus")(b)
    returns = b.rewards[:, None] * b.mask  # gamma = 1, no kl: G_t = R on every valid token
    torch.testing.assert_close(out, rlsdk.masked_whiten(returns, b.mask))


def test_reinforce_pp_discount_skips_masked_positions():
    # one row, valid tokens at 0, 2, 3 (a hole at 1): G = [g^2 R, ., g R, R] before whitening
    b = make_batch([1.0, 0.0], [0, 0], [[1, 0, 1, 1], [1, 1, 1, 1]])
    out = rlsdk.create("advantage", "reinforce_plus_plus", gamma=0.5)(b)
    returns = torch.tensor([[0.25, 0.0, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(out, rlsdk.masked_whiten(returns, b.mask))


def test_reinforce_pp_kl_needs_logprobs(batch):
    est = rlsdk.create("advantage", "reinforce_plus_plus", kl_coef=0.01)
    assert est.needs_ref_logprobs is True
    with pytest.raises(ConfigError, match=r"kl_coef=0\.01 needs batch\.old_logprobs"):
        est(batch)
    with pytest.raises(ConfigError, match=r"needs batch\.ref_logprobs.*advantage\.kl_coef=0"):
        est(batch.replace(old_logprobs=torch.zeros(batch.mask.shape)))
    # without the KL term the log-probs are not needed
    assert rlsdk.create("advantage", "reinforce_plus_plus").needs_ref_logprobs is False
    assert torch.isfinite(rlsdk.create("advantage", "reinforce_plus_plus")(batch)).all()


def test_reinforce_pp_nan_and_huge_logratios():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    old = torch.tensor([[-1.0, -2e4, float("nan")], [-0.5, float("inf"), float("-inf")]])
    ref = torch.tensor([[-3.0, -1.0, float("nan")], [-0.25, float("nan"), 5.0]])
    b = make_batch([1.0, 0.0], [0, 0], mask.tolist(), old_logprobs=old, ref_logprobs=ref)
    est = rlsdk.create("advantage", "reinforce_plus_plus", kl_coef=0.1)
    rewards = est.token_rewards(b)
    assert rewards[mask == 0].abs().sum().item() == 0.0
    assert rewards[0].tolist() == pytest.approx([-0.2, 1 + 1999.9, 0.0])
    out = check("reinforce_plus_plus", b, kl_coef=0.1)
    assert out[mask == 0].abs().sum().item() == 0.0


@pytest.mark.parametrize("style", ["verl", "openrlhf"])
def test_reinforce_pp_baseline_matches_reference(batch, style):
    out = check("reinforce_plus_plus_baseline", batch, style=style)
    valid = batch.mask > 0
    assert out[valid].double().mean().item() == pytest.approx(0.0, abs=1e-6)  # whitened over valid tokens
    if style == "openrlhf":
        assert out[valid].double().var(unbiased=False).item() == pytest.approx(1.0, rel=1e-5)


# --------------------------------------------------------------------------------------------------
# Edge cases shared by every estimator


@pytest.mark.parametrize("name", ESTIMATORS)
def test_empty_masks_give_zeros(name):
    b = make_batch([1.0, 0.0, 3.0, 2.0], [0, 0, 1, 1], [[0, 0, 0]] * 4)
    out = rlsdk.create("advantage", name)(b)
    assert out.shape == (4, 3)
    assert out.abs().sum().item() == 0.0


@pytest.mark.parametrize("name", ESTIMATORS)
def test_empty_batch(name):
    b = RolloutBatch(rewards=torch.zeros(0), group_ids=torch.zeros(0, dtype=torch.long), mask=torch.zeros(0, 3))
    assert rlsdk.create("advantage", name)(b).shape == (0, 3)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_masked_positions_exactly_zero_and_inputs_untouched(name, batch):
    batch = with_pairs(batch) if name == "grpo_passk" else batch
    batch = batch.replace(mask=batch.mask.bool())  # bool masks are accepted too
    before = {k: getattr(batch, k).clone() for k in ("rewards", "group_ids", "mask")}
    out = rlsdk.create("advantage", name)(batch)
    assert out[batch.mask == 0].abs().sum().item() == 0.0
    for key, value in before.items():
        assert torch.equal(getattr(batch, key), value), key


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.long])
def test_output_dtype(name, dtype):
    b = make_batch([1, 0, 2, 2], [0, 0, 1, 1], [[1, 1], [1, 0], [1, 1], [0, 1]], dtype=dtype)
    out = rlsdk.create("advantage", name)(b)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("options", [{}, {"unbiased": False}, {"eps": 1e-9}])
def test_all_equal_rewards_give_zero_grpo(options):
    b = make_batch([1000.1] * 5 + [0.3] * 3, [1] * 5 + [2] * 3, [[1, 1, 1]] * 8)
    out = rlsdk.create("advantage", "grpo", **options)(b)
    assert out.abs().max().item() < 1e-6
    for name in ["rloo", "opo", "grpo_passk"]:
        assert rlsdk.create("advantage", name)(b).abs().max().item() < 1e-9, name


def test_grpo_requires_grad_rewards_are_detached():
    rewards = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    b = RolloutBatch(rewards=rewards, group_ids=torch.tensor([0, 0, 0]), mask=torch.ones(3, 2))
    for name in ESTIMATORS:
        assert not rlsdk.create("advantage", name)(b).requires_grad, name


# --------------------------------------------------------------------------------------------------
# Hypothesis: references and properties on random batches


@SETTINGS
@given(batches(), st.sampled_from([{}, {"norm_std": False}, {"unbiased": False, "single_group": "zero"}]))
def test_grpo_random_batches(b, options):
    check("grpo", b, atol=1e-4, **options)


@SETTINGS
@given(batches(min_group=2), st.booleans())
def test_grpo_passk_random_batches(b, norm_std):
    check("grpo_passk", b, atol=1e-4, norm_std=norm_std)


@SETTINGS
@given(batches(dtype=torch.float64))
def test_rloo_and_opo_random_batches(b):
    check("rloo", b, atol=1e-9)
    check("opo", b, atol=1e-9)


@SETTINGS
@given(batches(), st.sampled_from(["verl", "openrlhf"]), st.floats(0.0, 1.0), st.floats(0.0, 0.5))
def test_reinforce_pp_random_batches(b, style, gamma, kl_coef):
    g = torch.Generator().manual_seed(b.rewards.shape[0])
    shape = b.mask.shape
    b = b.replace(old_logprobs=-5 * torch.rand(shape, generator=g), ref_logprobs=-5 * torch.rand(shape, generator=g))
    check("reinforce_plus_plus", b, atol=1e-4, style=style, gamma=gamma, kl_coef=kl_coef)
    check("reinforce_plus_plus_baseline", b, atol=1e-4, style=style)


@SETTINGS
@given(batches(min_group=2, nonempty=True, dtype=torch.float64))
def test_group_sums_are_zero(b):
    """GRPO (normalised or not) and RLOO sum to 0 within a group; OPO's length-weighted sum is 0."""
    lengths = b.mask.sum(-1).double()
    for name, options, weights in [
        ("grpo", {}, torch.ones_like(lengths)),
        ("grpo", {"norm_std": False}, torch.ones_like(lengths)),
        ("rloo", {}, torch.ones_like(lengths)),
        ("opo", {}, lengths),
    ]:
        a = scalar_advantages(rlsdk.create("advantage", name, **options)(b), b.mask)
        for g in b.group_ids.unique():
            rows = b.group_ids == g
            scale = 1 + b.rewards[rows].abs().max().item() * lengths[rows].sum().item()
            assert abs((weights[rows] * a[rows]).sum().item()) <= 1e-9 * scale, (name, options)


@SETTINGS
@given(batches(), st.data())
def test_permuting_rows_permutes_advantages(b, data):
    perm = torch.tensor(data.draw(st.permutations(list(range(b.rewards.shape[0])))), dtype=torch.long)
    shuffled = RolloutBatch(rewards=b.rewards[perm], group_ids=b.group_ids[perm], mask=b.mask[perm])
    single = any((b.group_ids == g).sum() < 2 for g in b.group_ids)
    for name in ESTIMATORS:
        if name == "grpo_passk" and single:
            continue
        est = rlsdk.create("advantage", name)
        torch.testing.assert_close(est(shuffled), est(b)[perm], atol=1e-5, rtol=1e-5, msg=name)


@SETTINGS
@given(batches(), st.data())
def test_relabelling_groups_changes_nothing(b, data):
    labels = b.group_ids.unique().tolist()
    new = data.draw(st.lists(st.integers(-(2**40), 2**40), min_size=len(labels), max_size=len(labels), unique=True))
    relabel = dict(zip(labels, new))
    renamed = b.replace(group_ids=torch.tensor([relabel[g] for g in b.group_ids.tolist()]))
    for name in ["grpo", "rloo", "opo", "reinforce_plus_plus_baseline"]:
        est = rlsdk.create("advantage", name)
        assert torch.equal(est(renamed), est(b)), name


@SETTINGS
@given(batches(int_rewards=True), st.floats(0.5, 20.0), st.floats(-5.0, 5.0))
def test_normalised_grpo_is_scale_and_shift_invariant(b, scale, shift):
    est = rlsdk.create("advantage", "grpo", single_group="zero")
    moved = b.replace(rewards=b.rewards * scale + shift)
    # integer rewards: a group std is 0 or >= 0.4, so eps moves A by at most ~1e-5 relative
    torch.testing.assert_close(est(moved), est(b), atol=1e-4, rtol=1e-4)
    dr = rlsdk.create("advantage", "grpo", norm_std=False, single_group="zero")
    torch.testing.assert_close(dr(moved), scale * dr(b), atol=1e-4, rtol=1e-4)
