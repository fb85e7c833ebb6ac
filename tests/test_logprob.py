"""Logprob backends ``torch`` and ``chunked`` against a float64 reference written from the formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

import rlsdk
import rlsdk.kinds
from rlsdk_plugins.logprob import ChunkedLogprob, TorchLogprob, chunked_logprobs

# --------------------------------------------------------------------------------------------------
# Reference: plain loops over tokens in float64 (kernels.md section 0)


def reference(hidden, weight, targets, temperature, g_logp=None, g_ent=None):
    """Log-probs, entropies and (optionally) dX, dW, token by token in numpy float64.

    s_j = x.w_j / tau; lse = max + log sum exp(s - max); logp = s_y - lse; Ent = lse - sum_j p_j s_j;
    ds_j = g_logp (onehot_j - p_j) - g_ent p_j (log p_j + Ent); dz = ds / tau; dX = dz W; dW = dz^T X.
    """
    x = hidden.detach().double().numpy()
    w = weight.detach().double().numpy()
    y = targets.numpy()
    n, v = x.shape[0], w.shape[0]
    logp, ent = np.zeros(n), np.zeros(n)
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for i in range(n):
        s = np.array([float(np.dot(x[i], w[j])) / temperature for j in range(v)])
        top = s.max()
        lse = top + math.log(sum(math.exp(sj - top) for sj in s))
        p = np.exp(s - lse)
        logp[i] = s[y[i]] - lse
        ent[i] = lse - float(np.dot(p, s))
        if g_logp is not None:
            ds = np.zeros(v)
            for j in range(v):
                ds[j] = float(g_logp[i]) * ((j == y[i]) - p[j]) - float(g_ent[i]) * p[j] * (s[j] - lse + ent[i])
            dz = ds / temperature
            dx[i] = dz @ w
            dw += np.outer(dz, x[i])
    return logp, ent, dx, dw


def make(n, h, v, seed=0, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, h, generator=g, dtype=torch.float64) * scale).to(dtype)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64).to(dtype)
    targets = torch.randint(0, v, (n,), generator=g)
    return hidden, weight, targets


BACKENDS = [TorchLogprob(), ChunkedLogprob(chunk_size=7), ChunkedLogprob(chunk_size=1), ChunkedLogprob(chunk_size=100)]
IDS = ["torch", "chunked7", "chunked1", "chunked100"]


def run_with_grads(backend, hidden, weight, targets, temperature, g_logp, g_ent):
    hidden = hidden.clone().requires_grad_(True)
    weight = weight.clone().requires_grad_(True)
    out = backend(hidden, weight, targets, temperature=temperature, with_entropy=True)
    (out.logprobs * g_logp).sum().add((out.entropy * g_ent).sum()).backward()
    return out, hidden.grad, weight.grad


# --------------------------------------------------------------------------------------------------
# Forward and gradients against the reference


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.7])
def test_forward_matches_reference(backend, temperature):
    hidden, weight, targets = make(13, 5, 23, seed=1)
    out = backend(hidden, weight, targets, temperature=temperature, with_entropy=True)
    logp, ent, _, _ = reference(hidden, weight, targets, temperature)
    assert out.logprobs.dtype == torch.float32 and out.logprobs.shape == (13,)
    assert out.entropy.dtype == torch.float32 and out.entropy.shape == (13,)
    np.testing.assert_allclose(out.logprobs.numpy(), logp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.entropy.numpy(), ent, rtol=1e-5, atol=1e-5)
    assert backend(hidden, weight, targets, temperature=temperature).entropy is None


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_gradients_match_reference(backend):
    hidden, weight, targets = make(11, 4, 19, seed=2, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    g_logp, g_ent = torch.randn(11, generator=g, dtype=torch.float64), torch.randn(11, generator=g, dtype=torch.float64)
    _, dx, dw = run_with_grads(backend, hidden, weight, targets, 0.8, g_logp.float(), g_ent.float())
    _, _, ref_dx, ref_dw = reference(hidden, weight, targets, 0.8, g_logp.numpy(), g_ent.numpy())
    assert dx.dtype == torch.float64 and dw.dtype == torch.float64  # gradients in the inputs' dtype
    np.testing.assert_allclose(dx.numpy(), ref_dx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw.numpy(), ref_dw, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("v,chunk", [(123, 10), (50, 64), (37, 37), (64, 16)])
def test_chunked_equals_torch_forward_and_backward(v, chunk):
    hidden, weight, targets = make(47, 31, v, seed=4)
    g = torch.Generator().manual_seed(5)
    g_logp, g_ent = torch.randn(47, generator=g), torch.randn(47, generator=g)
    ref, ref_dx, ref_dw = run_with_grads(TorchLogprob(), hidden, weight, targets, 0.7, g_logp, g_ent)
    out, dx, dw = run_with_grads(ChunkedLogprob(chunk), hidden, weight, targets, 0.7, g_logp, g_ent)
    torch.testing.assert_close(out.logprobs, ref.logprobs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.entropy, ref.entropy, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx, ref_dx, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dw, ref_dw, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("grad_hidden,grad_weight", [(True, False), (False, True), (False, False)])
def test_chunked_gradient_to_either_input(grad_hidden, grad_weight):
    hidden, weight, targets = make(9, 6, 30, seed=6)
    h_ref, w_ref = hidden.clone().requires_grad_(grad_hidden), weight.clone().requires_grad_(grad_weight)
    h, w = hidden.clone().requires_grad_(grad_hidden), weight.clone().requires_grad_(grad_weight)
    ref = TorchLogprob()(h_ref, w_ref, targets, with_entropy=True)
    out = ChunkedLogprob(8)(h, w, targets, with_entropy=True)
    assert out.logprobs.requires_grad == (grad_hidden or grad_weight)
    if grad_hidden or grad_weight:
        (ref.logprobs.sum() - ref.entropy.sum()).backward()
        (out.logprobs.sum() - out.entropy.sum()).backward()
    for mine, theirs, wanted in ((h, h_ref, grad_hidden), (w, w_ref, grad_weight)):
        if wanted:
            torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-4, atol=1e-5)
        else:
            assert mine.grad is None


def test_chunked_logprob_only_gradient_ignores_entropy():
    """Without entropy the backward uses g_logp alone (the unused entropy output has no gradient)."""
    hidden, weight, targets = make(8, 5, 21, seed=7, dtype=torch.float64)
    g_logp = torch.linspace(-1, 2, 8, dtype=torch.float64)
    h = hidden.clone().requires_grad_(True)
    out = ChunkedLogprob(5)(h, weight, targets, temperature=1.3)
    assert out.entropy is None
    (out.logprobs * g_logp.float()).sum().backward()
    _, _, ref_dx, _ = reference(hidden, weight, targets, 1.3, g_logp.numpy(), np.zeros(8))
    np.testing.assert_allclose(h.grad.numpy(), ref_dx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("with_entropy", [True, False])
def test_gradcheck_chunked_function(with_entropy):
    hidden, weight, targets = make(4, 3, 7, seed=8, dtype=torch.float64)
    hidden.requires_grad_(True)
    weight.requires_grad_(True)

    def f(x, w):
        logp, ent = chunked_logprobs(x, w, targets, 0.9, 3, with_entropy)
        return (logp, ent) if with_entropy else logp

    assert torch.autograd.gradcheck(f, (hidden, weight), eps=1e-6, atol=1e-6)


def test_bf16_no_worse_than_torch_bf16():
    """CCE's criterion: |chunked - fp64 truth| <= |naive bf16 PyTorch - fp64 truth| + tol."""
    hidden, weight, targets = make(64, 32, 300, seed=9, dtype=torch.bfloat16, scale=0.5)
    g = torch.Generator().manual_seed(10)
    g_logp, g_ent = torch.randn(64, generator=g), torch.randn(64, generator=g)
    truth, t_dx, t_dw = run_with_grads(TorchLogprob(), hidden.double(), weight.double(), targets, 0.8, g_logp, g_ent)

    h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    scores = (h @ w.T).float() / 0.8  # naive: the matmul in bf16
    naive_logp = torch.log_softmax(scores, -1).gather(-1, targets[:, None]).squeeze(-1)
    naive_ent = torch.logsumexp(scores, -1) - (torch.softmax(scores, -1) * scores).sum(-1)
    ((naive_logp * g_logp).sum() + (naive_ent * g_ent).sum()).backward()

    for backend in (TorchLogprob(), ChunkedLogprob(64)):
        out, dx, dw = run_with_grads(backend, hidden, weight, targets, 0.8, g_logp, g_ent)
        assert out.logprobs.dtype == torch.float32 and dx.dtype == torch.bfloat16 and dw.dtype == torch.bfloat16
        for mine, naive, exact, tol in (
            (out.logprobs, naive_logp, truth.logprobs, 1e-3),
            (out.entropy, naive_ent, truth.entropy, 1e-3),
            (dx, h.grad, t_dx, 1e-2),
            (dw, w.grad, t_dw, 1e-2),
        ):
            err = (mine.double() - exact.double()).abs().max().item()
            naive_err = (naive.double() - exact.double()).abs().max().item()
            assert err <= naive_err + tol, (err, naive_err)


# --------------------------------------------------------------------------------------------------
# Memory bound of the chunked backend


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_chunked_never_materialises_full_logits():
    n, h, v, chunk = 32, 4, 600, 30
    hidden, weight, targets = make(n, h, v, seed=11)
    hidden.requires_grad_(True)
    weight.requires_grad_(True)
    with _LargestTensor() as probe:
        out = ChunkedLogprob(chunk)(hidden, weight, targets, with_entropy=True)
        (out.logprobs.sum() + out.entropy.sum()).backward()
    # dW [V, H] = 2400 elements is the largest legitimate tensor; full logits would be N*V = 19200.
    assert probe.largest <= max(v * h, n * chunk, n * h)
    with _LargestTensor() as probe_torch:
        TorchLogprob()(hidden, weight, targets)
    assert probe_torch.largest >= n * v  # the probe does see full logits when they exist


# --------------------------------------------------------------------------------------------------
# Edge cases


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_empty_input(backend):
    hidden = torch.zeros(0, 4, requires_grad=True)
    weight = torch.randn(10, 4, requires_grad=True)
    out = backend(hidden, weight, torch.zeros(0, dtype=torch.long), with_entropy=True)
    assert out.logprobs.shape == (0,) and out.entropy.shape == (0,)
    out.logprobs.sum().backward()
    assert weight.grad is None or float(weight.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_peaked_distribution_is_finite(backend):
    """Very large logits (p_y ~ 1 and ~ 0): finite, logp <= 0, matches the reference, finite gradients."""
    hidden, weight, targets = make(10, 6, 40, seed=12, scale=300.0)
    h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    out = backend(h, w, targets, temperature=0.5, with_entropy=True)
    logp, ent, _, _ = reference(hidden, weight, targets, 0.5)
    assert torch.isfinite(out.logprobs).all() and (out.logprobs <= 0).all()
    np.testing.assert_allclose(out.logprobs.detach().numpy(), logp, rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(out.entropy.detach().numpy(), ent, atol=1e-3)
    (out.logprobs.sum() + out.entropy.sum()).backward()
    assert torch.isfinite(h.grad).all() and torch.isfinite(w.grad).all()


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_nan_row_does_not_leak_into_other_rows(backend):
    hidden, weight, targets = make(6, 4, 15, seed=13)
    bad = hidden.clone()
    bad[2] = float("nan")
    clean = backend(hidden, weight, targets, with_entropy=True)
    dirty = backend(bad, weight, targets, with_entropy=True)
    keep = torch.tensor([0, 1, 3, 4, 5])
    torch.testing.assert_close(dirty.logprobs[keep], clean.logprobs[keep])
    torch.testing.assert_close(dirty.entropy[keep], clean.entropy[keep])


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_does_not_mutate_inputs(backend):
    hidden, weight, targets = make(5, 3, 12, seed=14)
    copies = hidden.clone(), weight.clone(), targets.clone()
    h, w = hidden.requires_grad_(True), weight.requires_grad_(True)
    out = backend(h, w, targets, temperature=0.3, with_entropy=True)
    (out.logprobs.sum() + out.entropy.sum()).backward()
    for before, after in zip(copies, (hidden, weight, targets)):
        assert torch.equal(before, after.detach())


@pytest.mark.parametrize("backend", BACKENDS, ids=IDS)
def test_bad_calls_raise(backend):
    hidden, weight, targets = make(3, 4, 5)
    with pytest.raises(ValueError, match="temperature"):
        backend(hidden, weight, targets, temperature=0.0)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        backend(hidden, weight, torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match="weight"):
        backend(hidden, weight[:, :3], targets)


# --------------------------------------------------------------------------------------------------
# Registration and options


def test_backends_built_through_create():
    chunked = rlsdk.create("logprob_backend", "chunked", chunk_size=5)
    plain = rlsdk.create("logprob_backend", "torch")
    assert isinstance(chunked, ChunkedLogprob) and chunked.chunk_size == 5
    assert (
        rlsdk.kinds.conform("logprob_backend", chunked, "chunked") is chunked
        and rlsdk.kinds.conform("logprob_backend", plain, "plain") is plain
    )
    assert plain.priority > chunked.priority  # auto picks torch on CPU
    assert plain.supports(torch.device("cpu")) and chunked.supports(torch.device("cpu"))
    hidden, weight, targets = make(7, 3, 11, seed=15)
    torch.testing.assert_close(chunked(hidden, weight, targets).logprobs, plain(hidden, weight, targets).logprobs)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64"])
def test_chunk_size_validated(bad):
    with pytest.raises(rlsdk.ConfigError, match=r"logprob\.chunk_size.*positive integer"):
        rlsdk.create("logprob_backend", "chunked", chunk_size=bad)


# --------------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 6),
    h=st.integers(1, 5),
    v=st.integers(1, 30),
    chunk=st.integers(1, 40),
    temperature=st.floats(0.2, 3.0),
    seed=st.integers(0, 10_000),
)
def test_property_chunked_matches_reference(n, h, v, chunk, temperature, seed):
    hidden, weight, targets = make(n, h, v, seed=seed, scale=2.0)
    out = ChunkedLogprob(chunk)(hidden, weight, targets, temperature=temperature, with_entropy=True)
    plain = TorchLogprob()(hidden, weight, targets, temperature=temperature, with_entropy=True)
    logp, ent, _, _ = reference(hidden, weight, targets, temperature)
    np.testing.assert_allclose(out.logprobs.numpy(), logp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(plain.logprobs.numpy(), logp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.entropy.numpy(), ent, rtol=1e-4, atol=1e-5)
    assert (out.logprobs <= 1e-6).all()
    assert (out.entropy >= -1e-5).all() and (out.entropy <= math.log(v) + 1e-5).all()


@settings(max_examples=30, deadline=None)
@given(v=st.integers(1, 50), chunk=st.integers(1, 20), seed=st.integers(0, 10_000))
def test_property_probabilities_sum_to_one(v, chunk, seed):
    """Scoring every vocabulary entry of one context: sum_y exp(logp_y) = 1."""
    hidden, weight, _ = make(1, 3, v, seed=seed)
    out = ChunkedLogprob(chunk)(hidden.expand(v, 3), weight, torch.arange(v), temperature=0.9)
    assert abs(float(torch.logsumexp(out.logprobs.double(), 0))) < 1e-5
