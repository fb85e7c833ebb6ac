"""Tests of the policy-gradient losses (``clipped_pg``, ``reinforce``) of ``rlsdk_plugins.policy_gradient``.

Every option is checked against a float64 reference written token by token from the formulas in
the losses' docstrings (and the papers they cite): loss value, gradient with respect to the log-probs
(and to the entropy) and metrics.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rlsdk
import rlsdk.kinds
from rlsdk.functional import AGGREGATION_MODES, KL_ESTIMATORS
from rlsdk_plugins.policy_gradient import ClippedPG, Reinforce

SETTINGS = settings(max_examples=40, deadline=None)

DEFAULTS = {
    "eps_low": 0.2,
    "eps_high": None,
    "dual_clip_c": None,
    "delta": None,
    "logratio_clamp": 20.0,
    "kl_coef": 0.0,
    "kl_estimator": "k3",
    "kl_input_clamp": 20.0,
    "kl_output_clamp": 10.0,
    "entropy_coef": 0.0,
    "agg": "token-mean",
}


def registry():
    """The registry of installed plugins.

    Other reference plugins are written alongside this one; a failure to load *them* must not fail these
    tests, while a failure of ``policy_gradient`` still does.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"rlsdk: plugin rlsdk:(?!policy_gradient )", RuntimeWarning)
        return rlsdk.get_registry()


def make(name: str, **options):
    """Build a loss as ``rlsdk.create("loss", name, **options)`` does (entry point ``policy_gradient``)."""
    return registry().create("loss", name, options)


def close(actual, expected, tol: float = 1e-10) -> None:
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


def make_batch(
    seed: int,
    rows: int = 5,
    cols: int = 6,
    dtype: torch.dtype = torch.float64,
    empty_row: bool = True,
    spread: float = 1.0,
    **fields,
) -> tuple[torch.Tensor, rlsdk.TrainBatch]:
    """Random current log-probs (a leaf with gradient) and a batch around them.

    ``lp - old`` and ``lp - ref`` are ``spread * N(0, 1)``, so clipping, dual clip, delta and the KL clamps
    all trigger on some tokens. Row 1 is empty when ``empty_row``. ``entropy`` is a leaf with gradient.
    """
    g = torch.Generator().manual_seed(seed)
    kw = {"generator": g, "dtype": dtype}
    lp = -2.0 * torch.rand(rows, cols, **kw) - 0.05
    mask = (torch.rand(rows, cols, generator=g) < 0.75).to(dtype)
    if empty_row and rows > 1:
        mask[1] = 0.0
    batch_fields = {
        "mask": mask,
        "advantages": torch.randn(rows, cols, **kw),
        "old_logprobs": lp - spread * torch.randn(rows, cols, **kw),
        "ref_logprobs": lp - spread * torch.randn(rows, cols, **kw),
        "entropy": (2.0 * torch.rand(rows, cols, **kw)).requires_grad_(True),
        "rewards": torch.randn(rows, **kw),
        "group_ids": torch.arange(rows) // 2,
    }
    batch_fields.update(fields)
    return lp.requires_grad_(True), rlsdk.TrainBatch(**batch_fields)


def run(loss, lp: torch.Tensor, batch: rlsdk.TrainBatch):
    """``(output, d loss / d lp, d loss / d entropy)`` with zeros where a gradient is absent."""
    out = loss(lp, batch)
    inputs = [lp] + ([batch.entropy] if batch.entropy is not None and batch.entropy.requires_grad else [])
    grads = torch.autograd.grad(out.loss, inputs, allow_unused=True)
    grads = [torch.zeros_like(x) if gr is None else gr for x, gr in zip(inputs, grads)]
    return out, grads[0], grads[1] if len(grads) > 1 else None


# --------------------------------------------------------------------------------------------------
# The reference: plain Python loops over tokens, float64


def kl_ref(x: float, estimator: str, input_clamp, output_clamp) -> tuple[float, float]:
    """(value, d value / d lp) of one token's KL estimate (section 6)."""
    gate = 1.0
    if input_clamp is not None and abs(x) > input_clamp:
        x, gate = math.copysign(input_clamp, x), 0.0
    value, grad = {
        "k1": (x, 1.0),
        "abs": (abs(x), math.copysign(1.0, x)),
        "k2": (0.5 * x * x, x),
        "k3": (math.expm1(-x) + x, -math.expm1(-x)),
    }[estimator.rstrip("+")]
    if output_clamp is not None and abs(value) > output_clamp:
        value, grad = math.copysign(output_clamp, value), 0.0
    if estimator.endswith("+"):
        grad = x
    return value, grad * gate


def clipped_token(lp: float, old: float, adv: float, o: dict) -> tuple[float, float, dict[str, float]]:
    """(L, dL/dlp, per-token metrics) of the clipped surrogate for one valid token (section 2)."""
    x, gate = lp - old, 1.0
    if o["logratio_clamp"] is not None and abs(x) > o["logratio_clamp"]:
        x, gate = math.copysign(o["logratio_clamp"], x), 0.0
    rho = math.exp(x)
    eps_high = o["eps_low"] if o["eps_high"] is None else o["eps_high"]
    low, high = 1.0 - o["eps_low"], 1.0 + eps_high
    capped, d_capped = rho, rho * gate
    if o["delta"] is not None and rho > o["delta"]:
        capped, d_capped = o["delta"], 0.0
    unclipped, d_unclipped = -adv * capped, -adv * d_capped
    if rho < low:
        clipped, d_clipped = -adv * low, 0.0
    elif rho > high:
        clipped, d_clipped = -adv * high, 0.0
    else:
        clipped, d_clipped = -adv * rho, -adv * rho * gate
    if clipped > unclipped:
        loss, grad, clip = clipped, d_clipped, 1.0
    else:
        loss, grad, clip = unclipped, d_unclipped, 0.0
    metrics = {"clip_frac": clip, "ratio_mean": rho}
    if o["dual_clip_c"] is not None:
        dual = adv < 0 and loss > -o["dual_clip_c"] * adv
        if dual:
            loss, grad = -o["dual_clip_c"] * adv, 0.0
        metrics["dual_clip_frac"] = float(dual)
    return loss, grad, metrics


def reference(name: str, options: dict, lp: torch.Tensor, batch: rlsdk.TrainBatch):
    """(loss, d/d lp [B][T], d/d entropy [B][T], metrics) computed token by token."""
    o = {**DEFAULTS, **options}
    mask = batch.mask.tolist()
    lps, olds, advs = lp.tolist(), batch.old_logprobs.tolist(), batch.advantages.tolist()
    refs = None if batch.ref_logprobs is None else batch.ref_logprobs.tolist()
    ents = None if batch.entropy is None else batch.entropy.tolist()
    rows, cols = len(mask), len(mask[0]) if mask else 0
    n_tok, n_seq, n_rows, length = batch.num_tokens, batch.num_seqs, batch.num_rows, batch.max_length
    loss = 0.0
    g_lp = [[0.0] * cols for _ in range(rows)]
    g_ent = [[0.0] * cols for _ in range(rows)]
    sums: dict[str, float] = {"pg_loss": 0.0}
    for i in range(rows):
        seq_len = sum(mask[i])
        for t in range(cols):
            if mask[i][t] == 0:
                continue
            w = {
                "token-mean": 1.0 / max(n_tok, 1.0),
                "seq-mean-token-mean": 1.0 / (seq_len * max(n_seq, 1.0)),
                "seq-mean-token-sum": 1.0 / max(n_seq, 1.0),
                "seq-mean-token-sum-norm": 1.0 / (max(n_rows, 1.0) * max(length, 1.0)),
            }[o["agg"]]
            if name == "clipped_pg":
                term, d_term, token_metrics = clipped_token(lps[i][t], olds[i][t], advs[i][t], o)
            else:
                term, d_term, token_metrics = -advs[i][t] * lps[i][t], -advs[i][t], {}
            loss += w * term
            g_lp[i][t] += w * d_term
            sums["pg_loss"] += term
            for key, value in token_metrics.items():
                sums[key] = sums.get(key, 0.0) + value
            if refs is not None:
                x = lps[i][t] - refs[i][t]
                value, d_value = kl_ref(x, o["kl_estimator"], o["kl_input_clamp"], o["kl_output_clamp"])
                sums["kl"] = sums.get("kl", 0.0) + value
                loss += o["kl_coef"] * w * value
                g_lp[i][t] += o["kl_coef"] * w * d_value
            if ents is not None:
                sums["entropy"] = sums.get("entropy", 0.0) + ents[i][t]
                loss -= o["entropy_coef"] * w * ents[i][t]
                g_ent[i][t] = -o["entropy_coef"] * w
    if name == "clipped_pg":
        for key in ("clip_frac", "ratio_mean") + (("dual_clip_frac",) if o["dual_clip_c"] is not None else ()):
            sums.setdefault(key, 0.0)
    if refs is not None:
        sums.setdefault("kl", 0.0)
    if ents is not None:
        sums.setdefault("entropy", 0.0)
    metrics = {key: value / max(n_tok, 1.0) for key, value in sums.items()}
    return loss, g_lp, g_ent, metrics


def check_against_reference(name: str, options: dict, lp: torch.Tensor, batch: rlsdk.TrainBatch, tol: float = 1e-10):
    out, g_lp, g_ent = run(make(name, **options), lp, batch)
    loss, ref_g_lp, ref_g_ent, ref_metrics = reference(name, options, lp.detach(), batch)
    close(out.loss.item(), loss, tol)
    close(g_lp, ref_g_lp, tol)
    if g_ent is not None:
        close(g_ent, ref_g_ent, tol)
    assert set(out.metrics) == set(ref_metrics)
    for key, value in ref_metrics.items():
        metric = out.metrics[key]  # a detached 0-dim tensor: reading it would wait for the device
        assert isinstance(metric, torch.Tensor) and metric.dim() == 0 and not metric.requires_grad
        close(float(metric), value, tol)
    return out


# --------------------------------------------------------------------------------------------------
# Registration and defaults


def test_losses_are_registered_through_the_entry_point():
    assert registry().owner("loss", "clipped_pg") == "rlsdk:policy_gradient"
    assert registry().owner("loss", "reinforce") == "rlsdk:policy_gradient"
    assert isinstance(rlsdk.create("loss", "clipped_pg", eps_high=0.28), ClippedPG)  # the public entry point
    clipped, reinforce = make("clipped_pg"), make("reinforce")
    assert isinstance(clipped, ClippedPG) and isinstance(reinforce, Reinforce)
    assert (
        rlsdk.kinds.conform("loss", clipped, "clipped_pg") is clipped
        and rlsdk.kinds.conform("loss", reinforce, "reinforce") is reinforce
    )


def test_defaults_and_needs_flags():
    loss = make("clipped_pg")
    clip_options = (loss.eps_low, loss.eps_high, loss.dual_clip_c, loss.delta, loss.logratio_clamp)
    assert clip_options == (0.2, 0.2, None, None, 20.0)
    assert (loss.kl_coef, loss.kl_estimator, loss.kl_input_clamp, loss.kl_output_clamp) == (0.0, "k3", 20.0, 10.0)
    assert (loss.entropy_coef, loss.agg) == (0.0, "token-mean")
    assert loss.needs_ref_logprobs is False and loss.needs_entropy is False
    assert make("clipped_pg", eps_low=0.1).eps_high == 0.1
    assert make("clipped_pg", eps_low=0.1, eps_high=0.28).eps_high == 0.28
    flagged = make("reinforce", kl_coef=0.01, entropy_coef=-0.1)
    assert flagged.needs_ref_logprobs is True and flagged.needs_entropy is True


# --------------------------------------------------------------------------------------------------
# Formulas against the reference

KL_CASES = [{"kl_coef": 0.1, "kl_estimator": e, "kl_input_clamp": 1.0, "kl_output_clamp": 0.5} for e in KL_ESTIMATORS]
KL_CASES += [
    {"kl_coef": 0.05},
    {"kl_coef": 0.2, "kl_estimator": "k3+", "kl_input_clamp": None, "kl_output_clamp": None},
]
CLIPPED_CASES = [
    {},
    {"eps_low": 0.1, "eps_high": 0.28},
    {"eps_low": 0.0, "eps_high": 0.5},
    {"eps_low": 0.3},
    {"dual_clip_c": 3.0},
    {"dual_clip_c": 1.5, "eps_high": 0.28},
    {"delta": 1.5},
    {"delta": 3.0, "dual_clip_c": 2.0},  # dual clip binds only where delta > c
    {"logratio_clamp": 0.5},
    {"logratio_clamp": None},
    {"entropy_coef": 0.01},
    {"entropy_coef": -0.3},
    {"kl_coef": 0.1, "entropy_coef": 0.05, "dual_clip_c": 3.0, "eps_high": 0.28},
    *KL_CASES,
]
REINFORCE_CASES = [{}, {"entropy_coef": 0.02}, {"kl_coef": 0.1, "entropy_coef": -0.1}, *KL_CASES]


@pytest.mark.parametrize("agg", AGGREGATION_MODES)
@pytest.mark.parametrize("options", CLIPPED_CASES, ids=str)
def test_clipped_pg_matches_reference(options, agg):
    lp, batch = make_batch(seed=len(str(options)), rows=6, cols=8, spread=1.5)
    out = check_against_reference("clipped_pg", {**options, "agg": agg}, lp, batch)
    assert 0.0 < out.metrics["clip_frac"] < 1.0  # the clipped branch is exercised on some tokens only
    if "dual_clip_c" in options:
        assert out.metrics["dual_clip_frac"] > 0.0


@pytest.mark.parametrize("agg", AGGREGATION_MODES)
@pytest.mark.parametrize("options", REINFORCE_CASES, ids=str)
def test_reinforce_matches_reference(options, agg):
    lp, batch = make_batch(seed=100 + len(str(options)))
    check_against_reference("reinforce", {**options, "agg": agg}, lp, batch)


@pytest.mark.parametrize("agg", AGGREGATION_MODES)
def test_global_counts_of_a_micro_batch_are_used(agg):
    lp, batch = make_batch(seed=5)
    counts = {"num_tokens": 71.0, "num_seqs": 13.0, "num_rows": 17.0, "max_length": 11.0}
    batch = rlsdk.TrainBatch(**{**vars(batch), **counts})
    check_against_reference("clipped_pg", {"agg": agg, "kl_coef": 0.1, "entropy_coef": 0.01}, lp, batch)


def test_clip_and_delta_by_hand():
    """Four tokens worked out on paper (eps 0.2/0.28, delta 1.5, dual clip 3)."""
    lr = torch.tensor([[math.log(1.4), math.log(0.5), math.log(2.0), math.log(5.0)]], dtype=torch.float64)
    lp = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([[1.0, -2.0, 1.0, -1.0]], dtype=torch.float64)
    batch = rlsdk.TrainBatch(
        mask=torch.ones(1, 4), advantages=adv, old_logprobs=-lr, rewards=torch.zeros(1), group_ids=torch.zeros(1)
    )
    # PPO, L = max(-A*rho, -A*clip(rho, 0.8, 1.28)):
    #   rho=1.4, A=1: max(-1.4, -1.28) = -1.28 (clipped);   rho=0.5, A=-2: max(1.0, 1.6) = 1.6 (clipped);
    #   rho=2.0, A=1: max(-2.0, -1.28) = -1.28 (clipped);   rho=5.0, A=-1: max(5.0, 1.28) = 5.0.
    out = make("clipped_pg", eps_high=0.28)(lp, batch)
    close(out.loss.item(), (-1.28 + 1.6 - 1.28 + 5.0) / 4)
    close(out.metrics["clip_frac"], 3 / 4)
    close(out.metrics["ratio_mean"], (1.4 + 0.5 + 2.0 + 5.0) / 4)
    # Dual clip c=3 caps the last token (A<0) at -c*A = 3; the second (1.6 < 2*3) is untouched.
    out = make("clipped_pg", eps_high=0.28, dual_clip_c=3.0)(lp, batch)
    close(out.loss.item(), (-1.28 + 1.6 - 1.28 + 3.0) / 4)
    close(out.metrics["dual_clip_frac"], 1 / 4)
    # delta=1.5 caps the unclipped ratio of the last token: max(1.5, 1.28) = 1.5.
    close(make("clipped_pg", eps_high=0.28, delta=1.5)(lp, batch).loss.item(), (-1.28 + 1.6 - 1.28 + 1.5) / 4)
    (grad,) = torch.autograd.grad(make("clipped_pg", eps_high=0.28)(lp, batch).loss, lp)
    close(grad, [[0.0, 0.0, 0.0, 5.0 / 4]])  # only the unclipped token carries gradient: -A*rho/4


# --------------------------------------------------------------------------------------------------
# Edge cases

EDGE_LOSSES = [
    ("clipped_pg", {"kl_coef": 0.1, "entropy_coef": 0.01, "dual_clip_c": 3.0, "delta": 2.0}),
    ("clipped_pg", {"kl_coef": 0.1, "kl_estimator": "k3+", "logratio_clamp": None}),
    ("reinforce", {"kl_coef": 0.1, "entropy_coef": 0.01}),
]


@pytest.mark.parametrize("agg", AGGREGATION_MODES)
@pytest.mark.parametrize("name,options", EDGE_LOSSES)
def test_all_zero_mask_gives_zero_loss_and_gradient(name, options, agg):
    nan = torch.full((3, 4), float("nan"), dtype=torch.float64)
    lp = nan.clone().requires_grad_(True)
    batch = rlsdk.TrainBatch(
        mask=torch.zeros(3, 4),
        advantages=nan,
        old_logprobs=nan,
        ref_logprobs=nan,
        entropy=nan.clone().requires_grad_(True),
        rewards=torch.zeros(3),
        group_ids=torch.arange(3),
    )
    out, g_lp, g_ent = run(make(name, **options, agg=agg), lp, batch)
    assert out.loss.item() == 0.0
    assert (g_lp == 0).all() and (g_ent == 0).all()
    assert all(value == 0.0 for value in out.metrics.values())


@pytest.mark.parametrize("agg", AGGREGATION_MODES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name,options", EDGE_LOSSES)
def test_nan_and_inf_in_masked_positions_do_not_leak(name, options, bad, agg):
    lp_clean, batch = make_batch(seed=21)
    masked = batch.mask == 0
    assert masked.any()

    def dirty(x: torch.Tensor) -> torch.Tensor:
        return torch.where(masked, torch.tensor(bad, dtype=x.dtype), x.detach())

    lp_dirty = dirty(lp_clean).requires_grad_(True)
    batch_dirty = rlsdk.TrainBatch(
        mask=batch.mask,
        advantages=dirty(batch.advantages),
        old_logprobs=dirty(batch.old_logprobs),
        ref_logprobs=dirty(batch.ref_logprobs),
        entropy=dirty(batch.entropy).requires_grad_(True),
        rewards=batch.rewards,
        group_ids=batch.group_ids,
    )
    loss = make(name, **options, agg=agg)
    out, g_lp, g_ent = run(loss, lp_clean, batch)
    out_d, g_lp_d, g_ent_d = run(loss, lp_dirty, batch_dirty)
    assert torch.isfinite(out_d.loss) and torch.isfinite(g_lp_d).all() and torch.isfinite(g_ent_d).all()
    close(out_d.loss.item(), out.loss.item(), 1e-12)
    close(g_lp_d, g_lp, 1e-12)
    close(g_ent_d, g_ent, 1e-12)
    assert (g_lp_d[masked] == 0).all()
    assert set(out_d.metrics) == set(out.metrics)
    for key, value in out.metrics.items():  # floats or detached 0-dim tensors (LossOutput)
        close(float(out_d.metrics[key]), float(value), 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [1e3, 1e6])
@pytest.mark.parametrize("name,options", EDGE_LOSSES[:1] + EDGE_LOSSES[2:] + [("clipped_pg", {"kl_coef": 1.0})])
def test_very_large_log_ratios_give_finite_loss_and_gradient(name, options, size, dtype):
    g = torch.Generator().manual_seed(3)
    lp = (-torch.rand(4, 6, generator=g, dtype=dtype)).requires_grad_(True)
    signs = torch.where(torch.rand(4, 6, generator=g) < 0.5, -1.0, 1.0).to(dtype)
    batch = rlsdk.TrainBatch(
        mask=torch.ones(4, 6, dtype=dtype),
        advantages=torch.randn(4, 6, generator=g, dtype=dtype),
        old_logprobs=lp.detach() - size * signs,
        ref_logprobs=lp.detach() + size * signs,
        entropy=torch.rand(4, 6, generator=g, dtype=dtype).requires_grad_(True),
        rewards=torch.zeros(4, dtype=dtype),
        group_ids=torch.arange(4),
    )
    out, g_lp, _ = run(make(name, **options), lp, batch)
    assert torch.isfinite(out.loss) and torch.isfinite(g_lp).all()
    assert all(math.isfinite(v) for v in out.metrics.values())
    if dtype == torch.float64:  # the clamps are what the reference models too
        check_against_reference(name, options, lp, batch, tol=1e-9)


def test_without_logratio_clamp_a_huge_ratio_is_not_finite():
    """The documented reason for verl's default clamp: exp(1000) overflows."""
    lp = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    batch = rlsdk.TrainBatch(
        mask=torch.ones(1, 2),
        advantages=torch.tensor([[-1.0, 1.0]], dtype=torch.float64),
        old_logprobs=torch.full((1, 2), -1000.0, dtype=torch.float64),
        rewards=torch.zeros(1),
        group_ids=torch.zeros(1),
    )
    assert not torch.isfinite(make("clipped_pg", logratio_clamp=None)(lp, batch).loss)
    assert torch.isfinite(make("clipped_pg")(lp, batch).loss)


@pytest.mark.parametrize("name", ["clipped_pg", "reinforce"])
def test_all_equal_rewards_zero_advantage_leave_only_the_regularisers(name):
    lp, batch = make_batch(seed=13)
    zero_adv = rlsdk.TrainBatch(**{**vars(batch), "advantages": torch.zeros_like(batch.advantages)})
    out, g_lp, _ = run(make(name), lp, zero_adv)
    assert out.loss.item() == 0.0 and (g_lp == 0).all() and out.metrics["pg_loss"] == 0.0
    out, g_lp, _ = run(make(name, kl_coef=0.1), lp, zero_adv)
    close(out.loss.item(), 0.1 * out.metrics["kl"], 1e-12)  # token-mean: the KL term is the KL metric
    assert (g_lp != 0).any()


@pytest.mark.parametrize("agg", AGGREGATION_MODES)
def test_on_policy_gradient_equals_reinforce_gradient(agg):
    lp, batch = make_batch(seed=8)
    batch = rlsdk.TrainBatch(
        mask=batch.mask,
        advantages=batch.advantages,
        old_logprobs=lp.detach().clone(),
        rewards=batch.rewards,
        group_ids=batch.group_ids,
    )
    out_pg, g_pg, _ = run(make("clipped_pg", eps_high=0.28, dual_clip_c=3.0, agg=agg), lp, batch)
    out_rf, g_rf, _ = run(make("reinforce", agg=agg), lp, batch)
    close(g_pg, g_rf, 1e-12)
    assert g_pg.abs().sum() > 0
    close(out_pg.metrics["ratio_mean"], batch.mask.sum().item() / batch.num_tokens)  # ratio 1 everywhere
    assert out_pg.metrics["clip_frac"] == 0.0
    assert out_pg.loss.item() != pytest.approx(out_rf.loss.item())  # equal gradients, different values


# --------------------------------------------------------------------------------------------------
# Micro-batch invariance (the global-normalisation rule, section 4)

INVARIANCE_LOSSES = [
    ("clipped_pg", {}),
    ("clipped_pg", {"eps_high": 0.28, "dual_clip_c": 3.0, "kl_coef": 0.1, "entropy_coef": 0.01}),
    ("clipped_pg", {"delta": 1.5, "kl_coef": 0.05, "kl_estimator": "abs+"}),
    ("reinforce", {"kl_coef": 0.1, "kl_estimator": "k2", "entropy_coef": -0.05}),
]


@SETTINGS
@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 7),
    cols=st.integers(1, 5),
    agg=st.sampled_from(AGGREGATION_MODES),
    parts=st.sampled_from([1, 2, 4]),
    case=st.sampled_from(INVARIANCE_LOSSES),
)
def test_micro_batches_sum_to_the_whole_batch(seed, rows, cols, agg, parts, case):
    name, options = case
    lp, batch = make_batch(seed, rows, cols, empty_row=seed % 3 == 0)
    loss = make(name, **options, agg=agg)
    whole = loss(lp, batch)
    g_whole = torch.autograd.grad(whole.loss, [lp, batch.entropy], allow_unused=True)
    total = torch.zeros((), dtype=torch.float64)
    metrics: dict[str, float] = {}
    start = 0
    for micro in batch.split(min(parts, rows)):
        n = micro.mask.shape[0]
        out = loss(lp[start : start + n], micro)
        start += n
        total = total + out.loss
        for key, value in out.metrics.items():
            metrics[key] = metrics.get(key, 0.0) + value
    assert start == rows
    g_parts = torch.autograd.grad(total, [lp, batch.entropy], allow_unused=True)
    close(total.item(), whole.loss.item(), 1e-12)
    for a, b in zip(g_parts, g_whole):
        if a is None or b is None:
            assert a is None and b is None
        else:
            close(a, b, 1e-12)
    assert set(metrics) == set(whole.metrics)
    for key, value in whole.metrics.items():
        close(metrics[key], value, 1e-12)


# --------------------------------------------------------------------------------------------------
# Options, errors, purity


@pytest.mark.parametrize(
    "name,option,value",
    [
        ("clipped_pg", "agg", "token_mean"),
        ("clipped_pg", "agg", "mean"),
        ("clipped_pg", "eps_low", -0.1),
        ("clipped_pg", "eps_low", "0.2"),
        ("clipped_pg", "eps_low", float("nan")),
        ("clipped_pg", "eps_high", -0.01),
        ("clipped_pg", "dual_clip_c", 1.0),
        ("clipped_pg", "dual_clip_c", 0.5),
        ("clipped_pg", "delta", 1.2),
        ("clipped_pg", "logratio_clamp", 0.0),
        ("clipped_pg", "kl_estimator", "k4"),
        ("clipped_pg", "kl_estimator", "low_var_kl"),
        ("clipped_pg", "kl_coef", -0.001),
        ("clipped_pg", "kl_coef", True),
        ("clipped_pg", "kl_input_clamp", -1.0),
        ("clipped_pg", "kl_output_clamp", 0),
        ("clipped_pg", "entropy_coef", float("inf")),
        ("reinforce", "agg", "sum"),
        ("reinforce", "kl_estimator", "kl"),
        ("reinforce", "kl_coef", -1.0),
    ],
)
def test_invalid_options_name_the_option_and_the_value(name, option, value):
    with pytest.raises(rlsdk.ConfigError) as info:
        make(name, **{option: value})
    message = str(info.value)
    assert f"loss.{option}" in message and repr(value) in message


def test_delta_bound_follows_eps_high():
    make("clipped_pg", eps_high=0.28, delta=1.3)
    with pytest.raises(rlsdk.ConfigError, match=r"loss\.delta.*1 \+ eps_high = 1\.5"):
        make("clipped_pg", eps_high=0.5, delta=1.3)


def test_unknown_option_is_rejected_by_create():
    with pytest.raises(rlsdk.ConfigError, match="eps_low"):
        make("reinforce", eps_low=0.2)
    with pytest.raises(rlsdk.ConfigError, match="clip_ratio"):
        make("clipped_pg", clip_ratio=0.2)


@pytest.mark.parametrize("name", ["clipped_pg", "reinforce"])
def test_missing_ref_logprobs_or_entropy_is_a_clear_error(name):
    lp, batch = make_batch(seed=2)
    no_ref = rlsdk.TrainBatch(**{**vars(batch), "ref_logprobs": None})
    no_entropy = rlsdk.TrainBatch(**{**vars(batch), "entropy": None})
    with pytest.raises(ValueError, match=r"kl_coef.*ref_logprobs"):
        make(name, kl_coef=0.1)(lp, no_ref)
    with pytest.raises(ValueError, match=r"entropy_coef.*entropy"):
        make(name, entropy_coef=0.1)(lp, no_entropy)
    # Not needed: the metrics are simply left out.
    out = make(name)(lp, rlsdk.TrainBatch(**{**vars(batch), "ref_logprobs": None, "entropy": None}))
    assert "kl" not in out.metrics and "entropy" not in out.metrics


def test_metric_keys():
    lp, batch = make_batch(seed=4)
    assert set(make("clipped_pg")(lp, batch).metrics) == {"pg_loss", "clip_frac", "ratio_mean", "kl", "entropy"}
    assert "dual_clip_frac" in make("clipped_pg", dual_clip_c=3.0)(lp, batch).metrics
    assert set(make("reinforce")(lp, batch).metrics) == {"pg_loss", "kl", "entropy"}


def test_logprobs_shape_mismatch_is_an_error():
    lp, batch = make_batch(seed=6)
    with pytest.raises(ValueError, match="must match mask"):
        make("clipped_pg")(lp[:, :-1], batch)


@pytest.mark.parametrize("name,options", EDGE_LOSSES)
def test_loss_does_not_modify_its_inputs(name, options):
    lp, batch = make_batch(seed=9)
    old = torch.where(batch.mask > 0, batch.old_logprobs, float("nan"))
    batch = rlsdk.TrainBatch(**{**vars(batch), "old_logprobs": old})
    tensors = {"logprobs": lp, **{k: v for k, v in vars(batch).items() if isinstance(v, torch.Tensor)}}
    before = {k: (v.detach().clone(), v._version) for k, v in tensors.items()}
    out = make(name, **options)(lp, batch)
    out.loss.backward()
    for key, value in tensors.items():
        snapshot, version = before[key]
        assert value._version == version, f"{key} was modified in place"
        torch.testing.assert_close(value.detach(), snapshot, rtol=0, atol=0, equal_nan=True)


def test_float32_matches_float64():
    lp64, batch64 = make_batch(seed=12)
    lp32 = lp64.detach().float().requires_grad_(True)
    batch32 = rlsdk.TrainBatch(
        **{
            k: v.detach().float() if torch.is_tensor(v) and v.is_floating_point() else v
            for k, v in vars(batch64).items()
        }
    )
    loss = make("clipped_pg", kl_coef=0.1, dual_clip_c=3.0, agg="seq-mean-token-mean")
    out32, g32, _ = run(loss, lp32, batch32)
    out64, g64, _ = run(loss, lp64, batch64)
    assert out32.loss.dtype == torch.float32
    close(out32.loss.item(), out64.loss.item(), 1e-5)
    close(g32, g64, 1e-5)
