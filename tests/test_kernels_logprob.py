"""The ``triton`` logprob backend (rlsdk_kernels.linear_logprob) against float64 references.

Without a CUDA device every kernel runs under the Triton interpreter (``TRITON_INTERPRET=1``, set
here before triton is imported), on tiny odd shapes: ``V`` and ``N`` are never multiples of the
16/32-wide tiles, and the vocabulary is split so several partials are merged.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rlsdk
import rlsdk.testing
from rlsdk_kernels import plugin as kernels_plugin
from rlsdk_kernels.linear_logprob import (
    KernelConfig,
    fused_linear_logprobs,
    reference_logprobs,
    triton_available,
)
from rlsdk_kernels.plugin import TritonLogprobBackend

pytestmark = pytest.mark.skipif(
    not triton_available() or not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"),
    reason="needs triton, and CUDA or TRITON_INTERPRET=1",
)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
#: Small tiles with a 3-way vocabulary split, 50-column backward slices and (for ``matmul="torch"``)
#: 6-token forward chunks: every mask path runs.
SMALL = KernelConfig(block_n=16, block_v=16, block_h=16, vocab_splits=3, backward_slice=50, forward_chunk=6)


@pytest.fixture(params=["torch", "triton"], ids=["matmul-torch", "matmul-triton"])
def small(request):
    """:data:`SMALL` with the logits formed by cuBLAS GEMMs (``torch``) or by ``tl.dot`` tiles (``triton``)."""
    return dataclasses.replace(SMALL, matmul=request.param)


KERNELS_ROOT = Path(__file__).resolve().parents[1] / "kernels"


def make(n, h, v, seed=0, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, h, generator=g, dtype=torch.float64) * scale).to(dtype)
    weight = (torch.randn(v, h, generator=g, dtype=torch.float64) / math.sqrt(h) * 3).to(dtype)
    targets = torch.randint(0, v, (n,), generator=g)
    return hidden.to(DEVICE), weight.to(DEVICE), targets.to(DEVICE)


def reference_with_grads(hidden, weight, targets, temperature, g_lp, g_ent, ignore_index=-100):
    """float64 log-probs, entropies and autograd gradients of sum(g_lp logp + g_ent Ent)."""
    hd = hidden.detach().double().requires_grad_(True)
    wd = weight.detach().double().requires_grad_(True)
    lp, ent = reference_logprobs(hd, wd, targets, temperature, ignore_index)
    gx, gw = torch.autograd.grad((lp * g_lp.double()).sum() + (ent * g_ent.double()).sum(), [hd, wd])
    return lp.detach(), ent.detach(), gx, gw


def kernel_with_grads(hidden, weight, targets, temperature, g_lp, g_ent, config, ignore_index=-100):
    hx = hidden.detach().clone().requires_grad_(True)
    wx = weight.detach().clone().requires_grad_(True)
    lp, ent = fused_linear_logprobs(hx, wx, targets, temperature, True, ignore_index, config)
    gx, gw = torch.autograd.grad((lp * g_lp).sum() + (ent * g_ent).sum(), [hx, wx])
    return lp.detach(), ent.detach(), gx, gw


def assert_close(actual, expected, atol, rtol=1e-4, what=""):
    diff = (actual.double() - expected.double()).abs()
    bound = atol + rtol * expected.double().abs()
    assert bool((diff <= bound).all()), f"{what}: max |diff| {diff.max().item():.3g}"


# --------------------------------------------------------------------------------------------------
# Forward


@pytest.mark.parametrize("temperature", [0.6, 1.0, 1.7])
@pytest.mark.parametrize("shape", [(13, 24, 123), (5, 16, 37), (17, 20, 33)])
def test_logprobs_and_entropy_match_float64_reference(shape, temperature, small):
    hidden, weight, targets = make(*shape, seed=sum(shape))
    lp, ent = fused_linear_logprobs(hidden, weight, targets, temperature, True, config=small)
    ref_lp, ref_ent = reference_logprobs(hidden.double(), weight.double(), targets, temperature)
    assert lp.dtype == torch.float32 and lp.shape == (shape[0],)
    assert_close(lp, ref_lp, 2e-5, what="logprobs")
    assert_close(ent, ref_ent, 2e-5, what="entropy")
    assert bool((lp <= 0).all())


@pytest.mark.parametrize(
    "config",
    [
        KernelConfig(block_n=16, block_v=16, block_h=16, vocab_splits=1),
        KernelConfig(block_n=32, block_v=32, block_h=32, vocab_splits=2),
        KernelConfig(block_n=16, block_v=16, block_h=16, vocab_splits=100),  # clamped to the vocab blocks
        KernelConfig(block_n=32, block_v=16, block_h=16, vocab_splits=2, matmul="triton"),
        KernelConfig(block_n=16, block_v=16, forward_mib=0.004, backward_mib=0.002),  # MiB-sized chunks, slices
    ],
    ids=["one-split", "wide-tiles", "many-splits", "tiles", "budgets"],
)
def test_tilings_agree(config):
    hidden, weight, targets = make(13, 24, 123, seed=3)
    g = torch.Generator().manual_seed(8)
    g_lp, g_ent = torch.randn(13, generator=g).to(DEVICE), torch.randn(13, generator=g).to(DEVICE)
    ref_lp, ref_ent, ref_gx, ref_gw = reference_with_grads(hidden, weight, targets, 0.8, g_lp, g_ent)
    lp, ent, gx, gw = kernel_with_grads(hidden, weight, targets, 0.8, g_lp, g_ent, config=config)
    assert_close(lp, ref_lp, 2e-5, what="logprobs")
    assert_close(ent, ref_ent, 2e-5, what="entropy")
    assert_close(gx, ref_gx, 1e-4, what="dX")
    assert_close(gw, ref_gw, 1e-4, what="dW")


def test_without_entropy_returns_none(small):
    hidden, weight, targets = make(7, 16, 37)
    lp, ent = fused_linear_logprobs(hidden, weight, targets, 1.0, False, config=small)
    assert ent is None
    assert_close(lp, reference_logprobs(hidden.double(), weight.double(), targets)[0], 2e-5)


def test_peaked_softmax(small):
    """Targets whose logit dominates (p_y ~ 1): logp near 0 but never positive, gradients still right."""
    hidden, weight, targets = make(13, 24, 123, seed=5)
    weight = weight.clone()
    targets = torch.randperm(123, generator=torch.Generator().manual_seed(6))[:13].to(DEVICE)  # distinct rows
    weight[targets] = hidden * 2.0  # s_y = 2|x|^2, far above every other logit
    ref_lp, ref_ent, ref_gx, ref_gw = reference_with_grads(
        hidden, weight, targets, 1.0, torch.ones(13, device=DEVICE), torch.ones(13, device=DEVICE)
    )
    assert float(ref_lp.min()) > -1e-3  # the case is really peaked
    lp, ent, gx, gw = kernel_with_grads(
        hidden, weight, targets, 1.0, torch.ones(13, device=DEVICE), torch.ones(13, device=DEVICE), config=small
    )
    assert bool((lp <= 0).all())
    assert_close(lp, ref_lp, 1e-6, what="logprobs")
    assert_close(ent, ref_ent, 1e-5, what="entropy")
    assert_close(gx, ref_gx, 1e-4, what="dX")
    assert_close(gw, ref_gw, 1e-4, what="dW")


def test_ignore_index_rows_are_zero_with_zero_gradient(small):
    hidden, weight, targets = make(13, 24, 123, seed=7)
    targets = targets.clone()
    ignored = torch.tensor([0, 4, 12], device=DEVICE)
    targets[ignored] = -100
    g = torch.Generator().manual_seed(1)
    g_lp, g_ent = torch.randn(13, generator=g).to(DEVICE), torch.randn(13, generator=g).to(DEVICE)
    lp, ent, gx, gw = kernel_with_grads(hidden, weight, targets, 0.9, g_lp, g_ent, config=small)
    assert bool((lp[ignored] == 0).all()) and bool((ent[ignored] == 0).all())
    assert bool((gx[ignored] == 0).all())
    ref_lp, ref_ent, ref_gx, ref_gw = reference_with_grads(hidden, weight, targets, 0.9, g_lp, g_ent)
    assert_close(lp, ref_lp, 2e-5, what="logprobs")
    assert_close(ent, ref_ent, 2e-5, what="entropy")
    assert_close(gx, ref_gx, 1e-4, what="dX")
    assert_close(gw, ref_gw, 1e-4, what="dW")
    # Only the valid rows reach dW: it equals the gradient of the valid rows alone.
    keep = targets != -100
    _, _, _, gw_valid = reference_with_grads(hidden[keep], weight, targets[keep], 0.9, g_lp[keep], g_ent[keep])
    assert_close(gw, gw_valid, 1e-4, what="dW from valid rows")


def test_custom_ignore_index_and_all_ignored(small):
    hidden, weight, targets = make(5, 16, 37)
    lp, ent, gx, gw = kernel_with_grads(
        hidden,
        weight,
        torch.full_like(targets, 36),
        1.0,
        torch.ones(5, device=DEVICE),
        torch.ones(5, device=DEVICE),
        config=small,
        ignore_index=36,
    )
    assert bool((lp == 0).all()) and bool((ent == 0).all())
    assert bool((gx == 0).all()) and bool((gw == 0).all())


# --------------------------------------------------------------------------------------------------
# Backward


@pytest.mark.parametrize("temperature", [0.7, 1.3])
@pytest.mark.parametrize("shape", [(13, 24, 123), (17, 20, 33)])
def test_gradients_match_float64_autograd(shape, temperature, small):
    hidden, weight, targets = make(*shape, seed=11)
    g = torch.Generator().manual_seed(2)
    g_lp = torch.randn(shape[0], generator=g).to(DEVICE)
    g_ent = torch.randn(shape[0], generator=g).to(DEVICE)
    _, _, ref_gx, ref_gw = reference_with_grads(hidden, weight, targets, temperature, g_lp, g_ent)
    _, _, gx, gw = kernel_with_grads(hidden, weight, targets, temperature, g_lp, g_ent, config=small)
    assert gx.dtype == hidden.dtype and gw.dtype == weight.dtype
    assert_close(gx, ref_gx, 1e-5, what="dX")
    assert_close(gw, ref_gw, 1e-5, what="dW")


def test_gradient_of_one_output_only(small):
    """Upstream gradient on logp alone, then on Ent alone (the other is None in the backward)."""
    hidden, weight, targets = make(13, 24, 123, seed=13)
    g = torch.randn(13, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    zero = torch.zeros(13, device=DEVICE)
    for g_lp, g_ent, pick in ((g, zero, 0), (zero, g, 1)):
        _, _, ref_gx, ref_gw = reference_with_grads(hidden, weight, targets, 1.1, g_lp, g_ent)
        hx, wx = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        out = fused_linear_logprobs(hx, wx, targets, 1.1, True, config=small)
        gx, gw = torch.autograd.grad((out[pick] * g).sum(), [hx, wx])
        assert_close(gx, ref_gx, 1e-5, what="dX")
        assert_close(gw, ref_gw, 1e-5, what="dW")


def test_gradcheck_float64(small):
    """float64 end to end (the interpreter runs fp64 tl.dot): torch.autograd.gradcheck of both outputs."""
    hidden, weight, targets = make(5, 4, 7, seed=17, dtype=torch.float64)
    hidden.requires_grad_(True)
    weight.requires_grad_(True)

    def fn(x, w):
        return fused_linear_logprobs(x, w, targets, 0.8, True, config=small)

    assert torch.autograd.gradcheck(fn, (hidden, weight), eps=1e-6, atol=1e-7, rtol=1e-5)
    lp, ent = fn(hidden, weight)
    assert lp.dtype == torch.float64 and ent.dtype == torch.float64


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(1, 40), h=st.integers(1, 40), v=st.integers(1, 150), temperature=st.floats(0.3, 2.0),
    matmul=st.sampled_from(["torch", "triton"]), block_n=st.sampled_from([16, 32]), block_v=st.sampled_from([16, 64]),
    splits=st.sampled_from([None, 1, 3]), chunk=st.integers(1, 50), slice_=st.integers(1, 160), seed=st.integers(0, 99),
)  # fmt: skip
def test_property_any_shape_and_config_matches_float64(
    n, h, v, temperature, matmul, block_n, block_v, splits, chunk, slice_, seed
):
    """For any shape and configuration: log-probs, entropies and both gradients equal float64 autograd."""
    hidden, weight, targets = make(n, h, v, seed=seed, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    g_lp, g_ent = torch.randn(n, generator=g).to(DEVICE), torch.randn(n, generator=g).to(DEVICE)
    config = KernelConfig(
        block_n=block_n, block_v=block_v, block_h=16, vocab_splits=splits, matmul=matmul,
        forward_chunk=chunk, backward_slice=slice_,
    )  # fmt: skip
    ref = reference_with_grads(hidden, weight, targets, temperature, g_lp, g_ent)
    ours = kernel_with_grads(hidden, weight, targets, temperature, g_lp, g_ent, config=config)
    for name, mine, expected in zip(("logp", "entropy", "dX", "dW"), ours, ref):
        assert_close(mine, expected, 1e-10, rtol=1e-9, what=name)


# --------------------------------------------------------------------------------------------------
# Low precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_no_worse_than_torch_same_dtype(dtype, small):
    """|kernel - truth| <= |torch in the same dtype - truth| + tol (kernels.md section 6)."""
    hidden, weight, targets = make(13, 24, 123, seed=19, dtype=dtype)
    g = torch.Generator().manual_seed(4)
    g_lp, g_ent = torch.randn(13, generator=g).to(DEVICE), torch.randn(13, generator=g).to(DEVICE)
    truth = reference_with_grads(hidden, weight, targets, 0.9, g_lp, g_ent)
    ours = kernel_with_grads(hidden, weight, targets, 0.9, g_lp, g_ent, config=small)
    # The same computation in torch: logits in the input dtype, log-softmax in fp32, autograd.
    hx, wx = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    log_p = torch.log_softmax(((hx @ wx.T) / 0.9).float(), dim=-1)
    t_lp = log_p.gather(-1, targets[:, None]).squeeze(-1)
    t_ent = -(log_p.exp() * log_p).sum(-1)
    t_gx, t_gw = torch.autograd.grad((t_lp * g_lp).sum() + (t_ent * g_ent).sum(), [hx, wx])
    # CCE's tolerances, relative to the largest magnitude (dX and dW reach about 5 here).
    rel = {torch.bfloat16: 1e-2, torch.float16: 1e-3}[dtype]
    assert ours[2].dtype == dtype and ours[3].dtype == dtype
    for name, mine, torch_same, ref in zip(("logp", "entropy", "dX", "dW"), ours, (t_lp, t_ent, t_gx, t_gw), truth):
        err_ours = (mine.double() - ref).abs().max().item()
        err_torch = (torch_same.double() - ref).abs().max().item()
        tol = rel * max(1.0, ref.abs().max().item())
        assert err_ours <= err_torch + tol, f"{name}: kernel error {err_ours:.3g} > torch {err_torch:.3g} + {tol:.3g}"


# --------------------------------------------------------------------------------------------------
# Backend, plugin and training


def registry():
    names = rlsdk.testing.make_registry().names("logprob_backend")
    return rlsdk.testing.make_registry() if "triton" in names else rlsdk.testing.make_registry(kernels_plugin)


def test_backend_passes_the_conformance_check():
    rlsdk.testing.check_logprob_backend(TritonLogprobBackend())
    rlsdk.testing.check_logprob_backend(registry().create("logprob_backend", "triton", {"block_v": 16}))


def test_backend_equals_the_torch_backend():
    hidden, weight, targets = make(13, 24, 123, seed=23)
    torch_backend = rlsdk.create("logprob_backend", "torch")
    ours = registry().create("logprob_backend", "triton", {"block_v": 16, "vocab_splits": 2, "backward_slice": 40})
    g = torch.Generator().manual_seed(5)
    g_lp, g_ent = torch.randn(13, generator=g).to(DEVICE), torch.randn(13, generator=g).to(DEVICE)
    results = []
    for backend in (torch_backend, ours):
        hx, wx = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        out = backend(hx, wx, targets, temperature=0.7, with_entropy=True)
        grads = torch.autograd.grad((out.logprobs * g_lp).sum() + (out.entropy * g_ent).sum(), [hx, wx])
        results.append((out.logprobs, out.entropy, *grads))
    assert results[1][0].dtype == torch.float32 and results[1][1].dtype == torch.float32
    for name, a, b in zip(("logp", "entropy", "dX", "dW"), *results):
        assert_close(b, a, 2e-5, what=name)
    out = ours(hidden, weight, targets, temperature=0.7)
    assert out.entropy is None


def test_supports(monkeypatch):
    backend = TritonLogprobBackend()
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backend.supports(torch.device("cpu")) and backend.supports("cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not backend.supports(torch.device("cpu"))
    assert backend.supports(torch.device("cuda"))
    assert not backend.supports(torch.device("meta"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr("rlsdk_kernels._common.triton_available", lambda: False)
    assert not backend.supports(torch.device("cpu")) and not backend.supports(torch.device("cuda"))


def test_priority_and_auto(monkeypatch):
    """``auto`` picks triton on CUDA, never the interpreter on a CPU-only machine; by name it is always chosen."""
    from rlsdk.trainer import select_backend

    torch_priority = rlsdk.create("logprob_backend", "torch").priority
    reg = registry()
    auto = select_backend(reg, {}, DEVICE)
    assert isinstance(auto, TritonLogprobBackend) == torch.cuda.is_available()
    assert isinstance(select_backend(reg, {"backend": "triton"}, DEVICE), TritonLogprobBackend)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert TritonLogprobBackend().priority > torch_priority
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert TritonLogprobBackend().priority < torch_priority


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks triton on CUDA")
def test_auto_applies_options_to_the_backend_it_picks():
    """Options given with ``backend=auto`` reach the picked backend, or are an error naming it: never dropped."""
    from rlsdk.errors import ConfigError
    from rlsdk.trainer import select_backend

    with pytest.raises(ConfigError, match=r"unknown option 'matmul'.*backend=auto picked 'torch'"):
        select_backend(registry(), {"matmul": "triton"}, DEVICE)


@pytest.mark.parametrize(
    "options",
    [
        {"block_n": 12},
        {"block_v": 8},
        {"block_h": True},
        {"vocab_splits": 0},
        {"backward_slice": 0},
        {"num_warps": 3},
        {"matmul": "cuda"},
        {"forward_chunk": -1},
        {"forward_mib": 0},
        {"backward_mib": "big"},
        {"ignore_index": 1.5},
        {"fuse_loss_tokens": 0},
        {"fuse_loss_tokens": 2.5},
        {"fuse_loss_mib": -1},
        {"grad_accum": "fp8"},
    ],
)
def test_invalid_options_are_refused(options):
    """A config error (the CLI shows it without a traceback) naming the option."""
    with pytest.raises(rlsdk.ConfigError, match=next(iter(options))):
        TritonLogprobBackend(**options)


def test_invalid_inputs_are_refused():
    hidden, weight, targets = make(5, 16, 37)
    with pytest.raises(ValueError, match=r"\[0, 37\)"):
        fused_linear_logprobs(hidden, weight, torch.full_like(targets, 37))
    with pytest.raises(ValueError, match="temperature"):
        fused_linear_logprobs(hidden, weight, targets, temperature=0.0)
    with pytest.raises(ValueError, match="weight"):
        fused_linear_logprobs(hidden, weight[:, :3], targets)


def test_empty_batch():
    hidden, weight, _ = make(0, 16, 37)
    lp, ent = fused_linear_logprobs(hidden, weight, torch.zeros(0, dtype=torch.long, device=DEVICE), 1.0, True)
    assert lp.shape == (0,) and ent.shape == (0,)


def test_plugin_imports_and_registers_without_triton():
    """The entry-point module must load on a machine without triton; the backend then declines every device."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["triton"] = None
        sys.path.insert(0, {str(KERNELS_ROOT)!r})
        import torch, rlsdk.testing
        import rlsdk_kernels.plugin as plugin
        reg = rlsdk.testing.make_registry(plugin)
        names = reg.names("logprob_backend")
        assert "triton" in names and "torch" in names, names
        backend = reg.create("logprob_backend", "triton", {{}})
        assert not backend.supports(torch.device("cpu")) and not backend.supports(torch.device("cuda"))
        from rlsdk.trainer import select_backend
        assert type(select_backend(reg, {{}}, torch.device("cpu"))).__name__ == "TorchLogprob"
        assert sys.modules["triton"] is None
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "RLSDK_LOAD_PLUGINS"}
    env["TRITON_INTERPRET"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU run is the interpreter check")
def test_training_with_triton_matches_torch(same_training):
    rows, compared = same_training(
        {name: [f"logprob.backend={name}"] for name in ("torch", "triton")}, registry=registry()
    )
    assert len(rows["triton"]) == 2 and compared > 5


def test_runs_eagerly_inside_torch_compile(small, same_under_compile):
    """A compiled step around :func:`fused_linear_logprobs` (a ``torch.compiler.disable`` region, so a
    graph break) gives the eager values and gradients."""
    hidden, weight, targets = make(37, 24, 123, dtype=torch.float64)

    def step(x, w):
        lp, ent = fused_linear_logprobs(torch.tanh(x), w, targets, 0.7, True, config=small)
        return (lp * 2 + ent).sum()

    same_under_compile(step, hidden, weight)
