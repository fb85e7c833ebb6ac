"""Tests of the core tensor helpers in ``rlsdk.functional`` against float64 loop references written from
the formulas in their docstrings (and the papers and systems they cite)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import rlsdk
from rlsdk.functional import (
    AGGREGATION_MODES,
    KL_ESTIMATORS,
    aggregate,
    broadcast_to_tokens,
    group_stats,
    kl_estimate,
    masked_mean,
    masked_whiten,
    result_dtype,
)

SETTINGS = settings(max_examples=40, deadline=None)


def close(actual, expected, tol: float = 1e-10) -> None:
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


def random_batch(seed: int, rows: int = 5, cols: int = 6, empty_row: bool = True, **counts) -> rlsdk.TrainBatch:
    """A float64 batch with a random 0/1 mask (row 1 empty when ``empty_row``) and ``advantages`` as values."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(rows, cols, generator=g) < 0.7).double()
    if empty_row and rows > 1:
        mask[1] = 0.0
    return rlsdk.TrainBatch(
        mask=mask,
        advantages=torch.randn(rows, cols, generator=g, dtype=torch.float64),
        old_logprobs=torch.zeros(rows, cols, dtype=torch.float64),
        rewards=torch.zeros(rows, dtype=torch.float64),
        group_ids=torch.arange(rows),
        **counts,
    )


# --------------------------------------------------------------------------------------------------
# aggregate


def aggregate_ref(values: list[list[float]], mask: list[list[float]], mode: str, n_tok, n_seq, n_rows, length) -> float:
    """Section 3, written as loops over sequences and tokens."""
    total, seq_means = 0.0, 0.0
    for row_v, row_m in zip(values, mask):
        row_sum = sum(v * m for v, m in zip(row_v, row_m) if m > 0)
        total += row_sum
        seq_means += row_sum / max(sum(row_m), 1.0)
    if mode == "token-mean":
        return total / max(n_tok, 1.0)
    if mode == "seq-mean-token-mean":
        return seq_means / max(n_seq, 1.0)
    if mode == "seq-mean-token-sum":
        return total / max(n_seq, 1.0)
    return total / (max(n_rows, 1.0) * max(length, 1.0))


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_aggregate_matches_loops_with_local_counts(mode):
    batch = random_batch(0)
    values = batch.advantages
    mask = batch.mask.tolist()
    n_tok = sum(map(sum, mask))
    n_seq = sum(1 for row in mask if sum(row) > 0)
    assert n_seq == 4  # row 1 is empty and must not count as a sequence
    expected = aggregate_ref(values.tolist(), mask, mode, n_tok, n_seq, 5, 6)
    close(aggregate(values, batch, mode), expected)


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_aggregate_uses_the_global_counts_of_the_batch(mode):
    batch = random_batch(1, num_tokens=37.0, num_seqs=11.0, num_rows=13.0, max_length=9.0)
    expected = aggregate_ref(batch.advantages.tolist(), batch.mask.tolist(), mode, 37.0, 11.0, 13.0, 9.0)
    close(aggregate(batch.advantages, batch, mode), expected)


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_aggregate_gradient_is_the_per_token_weight(mode):
    batch = random_batch(2)
    values = batch.advantages.clone().requires_grad_(True)
    aggregate(values, batch, mode).backward()
    mask = batch.mask.tolist()
    n_tok = sum(map(sum, mask))
    n_seq = sum(1 for row in mask if sum(row) > 0)
    for i, row in enumerate(mask):
        for t, m in enumerate(row):
            weight = {
                "token-mean": 1.0 / n_tok,
                "seq-mean-token-mean": 1.0 / (max(sum(row), 1.0) * n_seq),
                "seq-mean-token-sum": 1.0 / n_seq,
                "seq-mean-token-sum-norm": 1.0 / (5 * 6),
            }[mode]
            close(values.grad[i, t], m * weight)


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_aggregate_ignores_nan_and_inf_in_masked_positions(mode, bad):
    batch = random_batch(3)
    clean = batch.advantages.clone().requires_grad_(True)
    dirty = torch.where(batch.mask > 0, batch.advantages, torch.tensor(bad, dtype=torch.float64)).requires_grad_(True)
    expected = aggregate(clean, batch, mode)
    got = aggregate(dirty, batch, mode)
    assert torch.isfinite(got)
    close(got.detach(), expected.detach())
    expected.backward()
    got.backward()
    assert torch.isfinite(dirty.grad).all()
    close(dirty.grad, clean.grad)


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_aggregate_of_an_empty_mask_is_zero(mode):
    batch = rlsdk.TrainBatch(
        mask=torch.zeros(3, 4),
        advantages=torch.full((3, 4), float("nan")),
        old_logprobs=torch.zeros(3, 4),
        rewards=torch.zeros(3),
        group_ids=torch.arange(3),
    )
    values = batch.advantages.clone().requires_grad_(True)
    out = aggregate(values, batch, mode)
    assert out.item() == 0.0
    out.backward()
    assert (values.grad == 0).all()


def test_aggregate_rejects_unknown_mode_and_bad_shape():
    batch = random_batch(5)
    with pytest.raises(ValueError, match="token_mean"):
        aggregate(batch.advantages, batch, "token_mean")
    with pytest.raises(ValueError, match="must match mask"):
        aggregate(batch.advantages[:, :2], batch, "token-mean")


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 7),
    cols=st.integers(1, 5),
    mode=st.sampled_from(AGGREGATION_MODES),
    parts=st.sampled_from([1, 2, 4]),
)
def test_aggregate_is_additive_over_micro_batches(seed, rows, cols, mode, parts):
    batch = random_batch(seed, rows, cols, empty_row=seed % 2 == 0)
    parts = min(parts, rows)
    values = batch.advantages.clone().requires_grad_(True)
    whole = aggregate(values, batch, mode)
    (grad_whole,) = torch.autograd.grad(whole, values)
    pieces, start = [], 0
    for micro in batch.split(parts):
        n = micro.mask.shape[0]
        pieces.append(aggregate(values[start : start + n], micro, mode))
        start += n
    summed = torch.stack(pieces).sum()
    (grad_pieces,) = torch.autograd.grad(summed, values)
    close(summed.detach(), whole.detach(), 1e-12)
    close(grad_pieces, grad_whole, 1e-12)


# --------------------------------------------------------------------------------------------------
# masked_mean


def test_masked_mean_matches_loops_and_ignores_masked_nan():
    batch = random_batch(6)
    values = torch.where(batch.mask > 0, batch.advantages, torch.tensor(float("nan"), dtype=torch.float64))
    vals, mask = batch.advantages.tolist(), batch.mask.tolist()
    valid = [v for rv, rm in zip(vals, mask) for v, m in zip(rv, rm) if m > 0]
    close(masked_mean(values, batch.mask), sum(valid) / len(valid))
    per_row = [sum(v for v, m in zip(rv, rm) if m > 0) / max(sum(rm), 1.0) for rv, rm in zip(vals, mask)]
    close(masked_mean(values, batch.mask, dim=-1), per_row)
    assert masked_mean(values, torch.zeros_like(batch.mask)).item() == 0.0


# --------------------------------------------------------------------------------------------------
# masked_whiten


def whiten_ref(values: np.ndarray, mask: np.ndarray, style: str, shift_mean: bool = True) -> np.ndarray:
    """W_v (verl) and W_o (OpenRLHF) from section 0, over the valid entries only."""
    valid = values[mask > 0]
    n = valid.size
    mean = valid.sum() / max(n, 1)
    sq = float(((valid - mean) ** 2).sum())
    if style == "verl":
        scale = 1.0 / math.sqrt(sq / max(n - 1, 1) + 1e-8)
    else:
        scale = 1.0 / math.sqrt(max(sq / max(n, 1), 1e-8))
    out = np.zeros_like(values)
    for idx in zip(*np.nonzero(mask > 0)):
        out[idx] = (values[idx] - mean) * scale + (0.0 if shift_mean else mean)
    return out


@pytest.mark.parametrize("style", ["verl", "openrlhf"])
@pytest.mark.parametrize("shift_mean", [True, False])
def test_masked_whiten_matches_reference(style, shift_mean):
    batch = random_batch(7)
    values = batch.advantages * 3.0 + 1.5
    expected = whiten_ref(values.numpy(), batch.mask.numpy(), style, shift_mean)
    close(masked_whiten(values, batch.mask, style=style, shift_mean=shift_mean), expected)


def test_masked_whiten_styles_differ_by_bessel_factor():
    batch = random_batch(8)
    n = batch.mask.sum().item()
    verl = masked_whiten(batch.advantages, batch.mask, "verl")
    openrlhf = masked_whiten(batch.advantages, batch.mask, "openrlhf")
    close(openrlhf, verl * math.sqrt(n / (n - 1)), 1e-6)


@pytest.mark.parametrize("style", ["verl", "openrlhf"])
def test_masked_whiten_edge_cases(style):
    batch = random_batch(9)
    mask = batch.mask
    nan_outside = torch.where(mask > 0, batch.advantages, torch.tensor(float("nan"), dtype=torch.float64))
    out = masked_whiten(nan_outside, mask, style)
    assert torch.isfinite(out).all()
    close(out, masked_whiten(batch.advantages, mask, style))
    assert (out[mask == 0] == 0).all()
    # All-equal values: zero everywhere (no division by a zero std).
    assert (masked_whiten(torch.full_like(mask, 4.0), mask, style) == 0).all()
    # No valid entry at all, and a single valid entry.
    assert (masked_whiten(batch.advantages, torch.zeros_like(mask), style) == 0).all()
    one = torch.zeros_like(mask)
    one[0, 0] = 1.0
    assert (masked_whiten(batch.advantages, one, style) == 0).all()


def test_masked_whiten_rejects_unknown_style():
    batch = random_batch(10)
    with pytest.raises(ValueError, match="trl"):
        masked_whiten(batch.advantages, batch.mask, style="trl")


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 6), cols=st.integers(2, 6))
def test_masked_whiten_verl_gives_zero_mean_and_variance_var_over_var_plus_eps(seed, rows, cols):
    """W_v divides by sqrt(var + 1e-8): the result's unbiased variance is var / (var + 1e-8) exactly.

    That is 1 only when var >> 1e-8 (holds for any batch with at least two valid tokens).
    """
    batch = random_batch(seed, rows, cols, empty_row=False)
    mask = batch.mask
    values = batch.advantages * 5.0
    valid = values[mask > 0]
    assume(valid.numel() >= 2)
    var = valid.var(unbiased=True).item()
    out = masked_whiten(values, mask, "verl")[mask > 0]
    close(out.mean(), 0.0, 1e-9)
    close(out.var(unbiased=True), var / (var + 1e-8), 1e-9)


# --------------------------------------------------------------------------------------------------
# group_stats


def group_stats_ref(values: list[float], groups: list[int], unbiased: bool):
    means, stds, sizes = [], [], []
    for g in groups:
        members = [v for v, h in zip(values, groups) if h == g]
        n = len(members)
        mu = sum(members) / n
        if n == 1:
            sd = 0.0
        else:
            sd = math.sqrt(sum((v - mu) ** 2 for v in members) / (n - 1 if unbiased else n))
        means.append(mu)
        stds.append(sd)
        sizes.append(float(n))
    return means, stds, sizes


@pytest.mark.parametrize("unbiased", [True, False])
def test_group_stats_matches_loops(unbiased):
    values = torch.tensor([1.0, 0.0, 3.0, 2.0, 2.0, -1.0, 5.0, 0.5], dtype=torch.float64)
    groups = torch.tensor([7, 3, 7, 3, 9, 3, 7, 42])  # unsorted ids, a group of one (42)
    mean, std, size = group_stats(values, groups, unbiased=unbiased)
    expected = group_stats_ref(values.tolist(), groups.tolist(), unbiased)
    close(mean, expected[0])
    close(std, expected[1])
    close(size, expected[2])
    assert std[-1].item() == 0.0 and std[4].item() == 0.0  # groups of one


def test_group_stats_all_equal_and_empty():
    mean, std, size = group_stats(torch.full((6,), 2.5, dtype=torch.float64), torch.tensor([0, 0, 0, 1, 1, 1]))
    assert (mean == 2.5).all() and (std == 0).all() and (size == 3).all()
    mean, std, size = group_stats(torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.long))
    assert mean.shape == std.shape == size.shape == (0,)


@SETTINGS
@given(
    values=st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=12),
    data=st.data(),
    unbiased=st.booleans(),
)
def test_group_stats_property_matches_loops_and_is_permutation_equivariant(values, data, unbiased):
    groups = data.draw(st.lists(st.integers(0, 3), min_size=len(values), max_size=len(values)))
    perm = data.draw(st.permutations(list(range(len(values)))))
    v = torch.tensor(values, dtype=torch.float64)
    g = torch.tensor(groups)
    mean, std, size = group_stats(v, g, unbiased)
    expected = group_stats_ref(values, groups, unbiased)
    close(mean, expected[0], 1e-9)
    close(std, expected[1], 1e-9)
    close(size, expected[2])
    p = torch.tensor(perm)
    mean_p, std_p, size_p = group_stats(v[p], g[p], unbiased)
    close(mean_p, mean[p], 1e-9)
    close(std_p, std[p], 1e-9)
    close(size_p, size[p])


# --------------------------------------------------------------------------------------------------
# kl_estimate


def kl_ref(x: float, estimator: str, input_clamp, output_clamp) -> tuple[float, float]:
    """(value, d value / d logprobs) for one token from section 6, clamps included."""
    gate = 1.0
    if input_clamp is not None and abs(x) > input_clamp:
        x, gate = math.copysign(input_clamp, x), 0.0
    base = estimator.rstrip("+")
    value, grad = {
        "k1": (x, 1.0),
        "abs": (abs(x), math.copysign(1.0, x)),
        "k2": (0.5 * x * x, x),
        "k3": (math.expm1(-x) + x, -math.expm1(-x)),
    }[base]
    if output_clamp is not None and abs(value) > output_clamp:
        value, grad = math.copysign(output_clamp, value), 0.0
    if estimator.endswith("+"):
        grad = x  # the gradient of k2 (before the output clamp)
    return value, grad * gate


XS = [-30.0, -4.0, -1.3, -0.2, 0.05, 0.7, 2.5, 25.0]


@pytest.mark.parametrize("estimator", KL_ESTIMATORS)
@pytest.mark.parametrize("clamps", [(20.0, 10.0), (None, None), (1.0, 0.5), (3.0, None)])
def test_kl_estimate_value_and_gradient_match_the_formulas(estimator, clamps):
    input_clamp, output_clamp = clamps
    ref = torch.tensor([0.3, -0.1, 1.0, 0.0, 0.2, -0.5, 0.4, 1.5], dtype=torch.float64)
    lp = (ref + torch.tensor(XS, dtype=torch.float64)).requires_grad_(True)
    out = kl_estimate(lp, ref, estimator, input_clamp, output_clamp)
    out.sum().backward()
    for k, x in enumerate(XS):
        value, grad = kl_ref(x, estimator, input_clamp, output_clamp)
        close(out[k].item(), value, 1e-9)
        close(lp.grad[k].item(), grad, 1e-9)


@pytest.mark.parametrize("base", ["k1", "k2", "k3", "abs"])
def test_straight_through_variants_have_named_value_and_k2_gradient(base):
    g = torch.Generator().manual_seed(11)
    ref = torch.randn(4, 5, generator=g, dtype=torch.float64)
    lp = (ref + 3.0 * torch.randn(4, 5, generator=g, dtype=torch.float64)).requires_grad_(True)
    plus = kl_estimate(lp, ref, base + "+")
    named = kl_estimate(lp, ref, base)
    k2 = kl_estimate(lp, ref, "k2", output_clamp=None)
    assert torch.equal(plus.detach(), named.detach())
    (g_plus,) = torch.autograd.grad(plus.sum(), lp)
    (g_k2,) = torch.autograd.grad(k2.sum(), lp)
    close(g_plus, g_k2, 1e-12)
    if base != "k2":
        (g_named,) = torch.autograd.grad(named.sum(), lp)
        assert not torch.allclose(g_named, g_k2)


def test_kl_estimate_clamps_keep_huge_log_ratios_finite():
    ref = torch.zeros(4, dtype=torch.float32)
    lp = torch.tensor([-1e4, -800.0, 800.0, 1e4], dtype=torch.float32, requires_grad=True)
    for estimator in KL_ESTIMATORS:
        out = kl_estimate(lp, ref, estimator)
        assert torch.isfinite(out).all() and out.abs().max() <= 10.0
        (grad,) = torch.autograd.grad(out.sum(), lp)
        assert torch.isfinite(grad).all()
    # Without clamps k3 overflows: the clamps are what keeps it finite.
    assert not torch.isfinite(kl_estimate(lp, ref, "k3", None, None)).all()


def test_kl_estimate_rejects_unknown_estimator():
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(torch.zeros(2), torch.zeros(2), "k4")


@SETTINGS
@given(
    x=st.lists(st.floats(-30, 30, allow_nan=False), min_size=1, max_size=10),
    estimator=st.sampled_from(KL_ESTIMATORS),
)
def test_kl_estimate_properties(x, estimator):
    lp = torch.tensor(x, dtype=torch.float64)
    ref = torch.zeros_like(lp)
    out = kl_estimate(lp, ref, estimator)
    assert torch.isfinite(out).all() and out.abs().max() <= 10.0
    for k, xi in enumerate(x):
        close(out[k].item(), kl_ref(xi, estimator, 20.0, 10.0)[0], 1e-9)
    if estimator.rstrip("+") != "k1":
        assert (out >= 0).all()  # k2, k3 and abs are non-negative estimates of a divergence
    assert kl_estimate(lp, lp.clone(), estimator).abs().max().item() == 0.0


# --------------------------------------------------------------------------------------------------
# result_dtype and broadcast_to_tokens (shared by the outcome-reward advantage estimators)


@pytest.mark.parametrize(
    ("reward_dtype", "expected"),
    [(torch.float64, torch.float64), (torch.float32, torch.float32), (torch.float16, torch.float32),
     (torch.bfloat16, torch.float32), (torch.int64, torch.float32)],
)  # fmt: skip
def test_result_dtype_is_float64_only_for_float64_rewards(reward_dtype, expected):
    assert result_dtype(torch.zeros(3, dtype=reward_dtype)) == expected


@SETTINGS
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(1, 7), st.sampled_from([torch.float32, torch.float64]))
def test_broadcast_to_tokens_matches_the_loop_reference(seed, rows, cols, dtype):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, generator=g, dtype=torch.float64) * 3
    mask = (torch.rand(rows, cols, generator=g) < 0.6).double()
    out = broadcast_to_tokens(scores, mask, dtype)
    assert out.shape == (rows, cols) and out.dtype == dtype
    expected = [
        [float(scores[i]) * float(mask[i, t]) if mask[i, t] > 0 else 0.0 for t in range(cols)] for i in range(rows)
    ]
    close(out, np.asarray(expected, dtype=np.float64).astype(np.float32 if dtype == torch.float32 else np.float64))


def test_broadcast_to_tokens_is_exactly_zero_at_masked_positions_even_for_non_finite_scores():
    scores = torch.tensor([math.inf, -math.inf, math.nan, 1.5])
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.5, 0.0]])
    before = (scores.clone(), mask.clone())
    out = broadcast_to_tokens(scores, mask, torch.float32)
    assert torch.equal(mask, before[1]) and torch.equal(scores.isnan(), before[0].isnan())  # inputs unchanged
    masked = mask == 0
    assert torch.equal(out[masked], torch.zeros(int(masked.sum())))
    assert not torch.signbit(out[masked]).any()  # +0.0, not -0.0
    assert out[0, 0] == math.inf and out[3, 0] == 0.75 and math.isnan(out[2, 1])
    # an integer or boolean mask works as well
    ones = torch.tensor([[1, 0], [1, 1]])
    expected = torch.tensor([[2.0, 0.0], [-1.0, -1.0]], dtype=torch.float64)
    assert torch.equal(broadcast_to_tokens(torch.tensor([2.0, -1.0]), ones, torch.float64), expected)
    assert torch.equal(broadcast_to_tokens(torch.tensor([2.0, -1.0]), ones.bool(), torch.float64), expected)
