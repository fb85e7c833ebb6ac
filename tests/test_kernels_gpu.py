"""Real-size GPU checks of the Triton kernels; without CUDA, the same checks scaled down, interpreted.

The CPU tests (``test_kernels_logprob.py``, ``test_kernels_pg_loss.py``) run the kernels under the
Triton interpreter on tiny shapes; this module compiles them for the GPU and runs them at the sizes
of real models:

- ``fused_linear_logprobs`` forward and backward with entropy, temperature 0.7, random per-token
  upstream gradients for log-probs and entropies, ignored rows and a few peaked rows, at
  N=4099, H=4096, V=128256 (Llama 3) and N=1937, H=3584, V=152064 (Qwen 2.5; verl's test shape):
  ``V`` and ``N`` are multiples of no tile size. bf16 and fp16 inputs follow CCE's rule
  ``|kernel - fp32 truth| <= |PyTorch in bf16 - fp32 truth| + 1e-2 max(1, |truth|)`` (maximum errors); fp32 inputs
  are held to small absolute tolerances (2e-5 of each output's largest magnitude) against the truth.
- the same calls with ``RLSDK_KERNELS_POISON=1`` (every output buffer starts as NaN): every output
  must be finite, so every element was written.
- ``FusedClippedPG`` against the PyTorch ``clipped_pg`` at B=64 rows x T=4099 tokens, all four
  aggregations, float32 and float64, with poisoned buffers.
- the fused hidden-states -> clipped-PG loss ops at N=4100, H=4096, V=128256 in 4 chunks
  (the ``triton`` backend's ``loss_from_hidden`` with ``FusedClippedPG`` and with ``ClippedPG``), both
  ``grad_accum`` settings, bf16 and fp32, against the PyTorch path, with poisoned buffers; and the
  in-place ``addmm(out_dtype=float32)`` their GEMMs rely on.

References are computed in token chunks of ``CHUNK`` rows (autograd per chunk, ``dW`` summed in
fp32), so no ``[N, V]`` tensor is held. The module takes well under a minute on an H100.

Without CUDA the same tests run on the CPU under the Triton interpreter with every size scaled down
(``SCALED_DOWN``: a few hundred tokens, H 64, V about 1000) and the CUDA tiles. That checks this
module's own logic (cases, references, tolerances) before a rare GPU session depends on it; the
kernels themselves are tested on the CPU by ``test_kernels_logprob.py``, ``test_kernels_pg_loss.py``
and ``test_kernels_linear_pg.py``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

import rlsdk
import rlsdk.testing
from rlsdk.functional import AGGREGATION_MODES
from rlsdk_kernels import _buffers, pg_loss
from rlsdk_kernels._gemm import add_mm
from rlsdk_kernels.linear_logprob import (
    CUDA_TILES,
    MATMULS,
    KernelConfig,
    fused_linear_logprobs,
    triton_available,
    triton_problem,
)  # fmt: skip
from rlsdk_kernels.plugin import FusedClippedPG, TritonLogprobBackend
from rlsdk_plugins.policy_gradient import ClippedPG

pytest.importorskip("triton")
if not triton_available():
    pytest.skip(f"needs a triton that runs the kernels: {triton_problem()}", allow_module_level=True)
#: Without CUDA: the checks at small sizes, interpreted (tests/conftest.py set TRITON_INTERPRET=1).
SCALED_DOWN = not torch.cuda.is_available()
if not SCALED_DOWN and os.environ.get("TRITON_INTERPRET", "0") == "1":
    pytest.skip("real-size checks need compiled kernels: unset TRITON_INTERPRET", allow_module_level=True)

DEVICE = torch.device("cpu" if SCALED_DOWN else "cuda")
#: (N, H, V): Llama-3-8B's head with an odd token count, and verl's Qwen-2.5-7B test shape.
SHAPES = {"llama3": (4099, 4096, 128256), "qwen2.5": (1937, 3584, 152064)}
#: The fused loss test: rows x tokens, and the ``triton`` backend's options for chunks small enough
#: for 4 of them (1152 tokens).
FUSED_ROWS, FUSED_LENGTH, FUSED_CHUNKS = 4, 1025, {"fuse_loss_mib": 300.0}
#: The clipped PG loss test: rows x tokens.
PG_ROWS, PG_LENGTH = 64, 4099
if SCALED_DOWN:
    SHAPES = {"llama3": (131, 64, 1031), "qwen2.5": (67, 48, 1531)}
    FUSED_ROWS, FUSED_LENGTH, FUSED_CHUNKS = 4, 33, {"fuse_loss_tokens": 36}
    PG_ROWS, PG_LENGTH = 16, 131
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
#: The log-prob kernel's accuracy test also covers fp16 inputs (held to the same rule as bf16).
ALL_DTYPES = {**DTYPES, "fp16": torch.float16}
TEMPERATURE = 0.7
IGNORE = -100
#: Reference rows per chunk: [CHUNK, V] fp32 logits and their autograd buffers stay a few GiB.
CHUNK = 32 if SCALED_DOWN else 1024
#: CCE's bf16 tolerance, relative to the largest magnitude of each output (at least 1), added to
#: PyTorch's own bf16 error.
BF16_TOL = 1e-2
#: fp32 inputs: |kernel - fp32 truth| <= FP32_ATOL + FP32_RTOL * max |truth| (IEEE fp32 on both sides,
#: only the summation order differs: over H = 4096 products that is ~1e-5 of the largest logit).
FP32_ATOL, FP32_RTOL = 1e-5, 2e-5
NAMES = ("logp", "entropy", "dX", "dW")

Outputs = tuple[Tensor, Tensor, Tensor, Tensor]


@dataclasses.dataclass
class Case:
    """Inputs of one fused log-prob call: ``[N, H]`` hidden, ``[V, H]`` weight, targets, upstream gradients."""

    hidden: Tensor
    weight: Tensor
    targets: Tensor
    g_lp: Tensor
    g_ent: Tensor

    @property
    def ignored(self) -> Tensor:
        """Boolean ``[N]``: rows whose target is ``IGNORE``."""
        return self.targets == IGNORE


def make_case(shape: tuple[int, int, int], dtype: torch.dtype, seed: int = 0) -> Case:
    """Random inputs on the GPU: logits of std ~3 (before the temperature), 64 peaked rows, ignored rows.

    Ignored: every 17th row and the last 29 (a padded tail). Peaked: every 61st row (64 at most),
    whose target's weight row is a multiple of its hidden state, so ``s_y`` ~ 46 dominates the other
    logits (std ~4.3 after the temperature).
    """
    n, h, v = shape
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, device=DEVICE)
    weight = torch.randn(v, h, generator=g, device=DEVICE) * (3.0 / math.sqrt(h))
    peaked = torch.arange(1, n, 61, device=DEVICE)[:64]
    targets = torch.randperm(v, generator=g, device=DEVICE)[:n].clone()  # distinct: peaked rows own theirs
    weight[targets[peaked]] = hidden[peaked] * (32.0 / h)
    rows = torch.arange(n, device=DEVICE)
    targets[(rows % 17 == 5) | (rows >= n - 29)] = IGNORE
    g_lp = torch.randn(n, generator=g, device=DEVICE)
    g_ent = torch.randn(n, generator=g, device=DEVICE)
    return Case(hidden.to(dtype), weight.to(dtype), targets, g_lp, g_ent)


def kernel_with_grads(case: Case, matmul: str = "torch") -> Outputs:
    """``(logp, entropy, dX, dW)`` of ``fused_linear_logprobs`` (default CUDA tiles) and its backward."""
    hx = case.hidden.detach().clone().requires_grad_(True)
    wx = case.weight.detach().clone().requires_grad_(True)
    config = KernelConfig(**CUDA_TILES[matmul], matmul=matmul)
    lp, ent = fused_linear_logprobs(hx, wx, case.targets, TEMPERATURE, True, IGNORE, config)
    assert ent is not None
    gx, gw = torch.autograd.grad((lp * case.g_lp).sum() + (ent * case.g_ent).sum(), [hx, wx])
    return lp.detach(), ent.detach(), gx, gw


def torch_with_grads(case: Case, compute: torch.dtype) -> Outputs:
    """PyTorch by token chunks: logits in ``compute``, fp32 log-softmax, autograd; ``dW`` summed in fp32.

    With ``compute=float32`` this is the truth; with the inputs' dtype it is "PyTorch in the same
    dtype" of CCE's rule (logits and the autograd GEMMs in bf16, as eager PyTorch computes them).
    ``dX`` and ``dW`` are returned in ``compute``.
    """
    w = case.weight.detach().to(compute).requires_grad_(True)
    grad_w = torch.zeros(w.shape, dtype=torch.float32, device=DEVICE)
    logps, ents, grads_x = [], [], []
    for start in range(0, case.hidden.shape[0], CHUNK):
        rows = slice(start, start + CHUNK)
        x = case.hidden[rows].detach().to(compute).requires_grad_(True)
        y = case.targets[rows]
        valid = y != IGNORE
        log_p = torch.log_softmax((x @ w.T).float() / TEMPERATURE, dim=-1)
        lp = torch.where(valid, log_p.gather(-1, torch.where(valid, y, 0)[:, None]).squeeze(-1), 0.0)
        ent = torch.where(valid, -(log_p.exp() * log_p).sum(-1), 0.0)
        gx, gw = torch.autograd.grad((lp * case.g_lp[rows]).sum() + (ent * case.g_ent[rows]).sum(), [x, w])
        grad_w += gw.float()
        logps.append(lp.detach())
        ents.append(ent.detach())
        grads_x.append(gx)
        del log_p, lp, ent, gw
    return torch.cat(logps), torch.cat(ents), torch.cat(grads_x), grad_w.to(compute)


def max_error(actual: Tensor, expected: Tensor) -> float:
    """``max |actual - expected|`` in fp32."""
    return float((actual.float() - expected.float()).abs().max())


def assert_finite(outputs: Outputs) -> None:
    """Every element of every output is finite (no NaN left by a poisoned buffer, no inf)."""
    for name, value in zip(NAMES, outputs, strict=True):
        bad = int((~torch.isfinite(value)).sum())
        assert bad == 0, f"{name}: {bad} of {value.numel()} elements are not finite"


def assert_ignored_rows_are_zero(case: Case, outputs: Outputs) -> None:
    """Ignored rows: log-prob 0, entropy 0, zero ``dX`` row."""
    lp, ent, gx, _ = outputs
    ignored = case.ignored
    assert bool((lp[ignored] == 0).all()) and bool((ent[ignored] == 0).all())
    assert bool((gx[ignored] == 0).all())


@pytest.fixture(autouse=True)
def release_gpu_memory() -> Iterator[None]:
    """Hand the cached blocks back after each test (other test processes may share the GPU)."""
    yield
    torch.cuda.empty_cache()


@pytest.fixture
def ieee_fp32() -> Iterator[None]:
    """fp32 matmuls in IEEE fp32 (no TF32, PyTorch's default) for the truth, as the kernel computes fp32.

    Since torch 2.9 this older API may warn that it will be deprecated (once per process); the
    warning is ignored here so that pytest's ``filterwarnings = error`` does not turn it into an error.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.set_float32_matmul_precision(old)


# --------------------------------------------------------------------------------------------------
# Fused linear log-prob + entropy


@pytest.mark.parametrize("matmul", MATMULS)
@pytest.mark.parametrize("dtype", ALL_DTYPES.values(), ids=ALL_DTYPES.keys())
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_logprobs_and_gradients_at_real_sizes(
    shape: tuple[int, int, int], dtype: torch.dtype, matmul: str, ieee_fp32: None
) -> None:
    """Log-probs, entropies, dX and dW against the fp32 truth (bf16, fp16: no worse than PyTorch in the
    same dtype + 1e-2)."""
    case = make_case(shape, dtype)
    ours = kernel_with_grads(case, matmul)
    lp, ent, gx, gw = ours
    assert lp.dtype == torch.float32 and ent.dtype == torch.float32
    assert gx.dtype == dtype and gw.dtype == dtype
    assert_finite(ours)
    assert_ignored_rows_are_zero(case, ours)
    assert float(lp.max()) <= 1e-6  # lse >= s_y (up to the rounding of a hardware exp)
    truth = torch_with_grads(case, torch.float32)
    # The peaked rows are really peaked (else the case would test little).
    peaked = torch.arange(1, shape[0], 61, device=DEVICE)[:64]
    peaked = peaked[~case.ignored[peaked]]
    assert float(truth[0][peaked].min()) > -1e-2
    if dtype == torch.float32:
        for name, mine, ref in zip(NAMES, ours, truth, strict=True):
            err, tol = max_error(mine, ref), FP32_ATOL + FP32_RTOL * float(ref.abs().max())
            print(f"{shape} fp32 {name}: max |kernel - truth| {err:.3g} (tolerance {tol:.3g})")
            assert err <= tol, f"{name}: max |kernel - fp32 truth| = {err:.3g} > {tol:.3g}"
        return
    same = torch_with_grads(case, dtype)
    for name, mine, torch_same, ref in zip(NAMES, ours, same, truth, strict=True):
        err_ours, err_torch = max_error(mine, ref), max_error(torch_same, ref)
        tol = BF16_TOL * max(1.0, float(ref.abs().max()))
        print(f"{shape} {str(dtype)[6:]} {name}: max |kernel - truth| {err_ours:.3g}, |torch - truth| {err_torch:.3g}")
        assert err_ours <= err_torch + tol, (
            f"{name}: kernel error {err_ours:.3g} > torch {str(dtype)[6:]} error {err_torch:.3g} + {tol:.3g}"
        )


@pytest.mark.parametrize("matmul", MATMULS)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_poisoned_buffers_are_fully_written(
    shape: tuple[int, int, int], dtype: torch.dtype, matmul: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every kernel buffer starting as NaN, forward and backward still give finite outputs."""
    monkeypatch.setenv(_buffers.POISON_ENV, "1")
    assert bool(torch.isnan(_buffers.empty(3, dtype=torch.float32, device=DEVICE)).all())  # the switch works
    case = make_case(shape, dtype, seed=1)
    outputs = kernel_with_grads(case, matmul)
    assert_finite(outputs)
    assert_ignored_rows_are_zero(case, outputs)


# --------------------------------------------------------------------------------------------------
# Fused clipped policy-gradient loss


PG_OPTIONS = {"eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": 3.0, "kl_coef": 0.04, "kl_estimator": "k3"}


def pg_batch(dtype: torch.dtype, rows: int = PG_ROWS, length: int = PG_LENGTH, seed: int = 21) -> rlsdk.TrainBatch:
    """``rlsdk.testing.make_train_batch`` (ragged mask, an empty row, a hole) moved to the GPU in ``dtype``."""
    batch = rlsdk.testing.make_train_batch(seed, rows=rows, length=length, group_size=8)
    changes = {
        f.name: value.to(DEVICE, dtype) if value.is_floating_point() else value.to(DEVICE)
        for f in dataclasses.fields(batch)
        if isinstance(value := getattr(batch, f.name), Tensor)
    }
    return dataclasses.replace(batch, **changes)


def loss_and_grad(loss: ClippedPG, logprobs: Tensor, batch: rlsdk.TrainBatch) -> tuple[float, Tensor, dict[str, float]]:
    """``(loss, dloss/dlogprobs, metrics)`` of one call."""
    lp = logprobs.detach().clone().requires_grad_(True)
    out = loss(lp, batch)
    (grad,) = torch.autograd.grad(out.loss, [lp])
    return float(out.loss.detach()), grad, out.metrics


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("agg", AGGREGATION_MODES)
def test_fused_pg_loss_matches_clipped_pg_at_real_size(
    agg: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loss, gradient and metrics equal ``clipped_pg``'s on 64 x 4099 tokens, with poisoned buffers."""
    monkeypatch.setenv(_buffers.POISON_ENV, "1")
    batch = pg_batch(dtype)
    g = torch.Generator(device=DEVICE).manual_seed(22)
    noise = torch.randn(batch.mask.shape, generator=g, device=DEVICE, dtype=dtype)
    logprobs = (batch.old_logprobs + 0.5 * noise).clamp_max(0.0)  # clipped tokens on both sides, some dual
    opts = {**PG_OPTIONS, "agg": agg}
    expected, expected_grad, expected_metrics = loss_and_grad(ClippedPG(**opts), logprobs, batch)
    fused = FusedClippedPG(**opts)
    assert pg_loss.supports(DEVICE)
    got, grad, metrics = loss_and_grad(fused, logprobs, batch)
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    assert math.isfinite(got) and abs(got - expected) <= rtol * max(abs(expected), 1e-3), (got, expected)
    assert bool(torch.isfinite(grad).all())
    assert bool((grad[batch.mask <= 0] == 0).all())
    assert max_error(grad, expected_grad) <= rtol * max(float(expected_grad.abs().max()), 1e-12)
    assert list(metrics) == list(expected_metrics)
    for key, value in expected_metrics.items():
        assert math.isclose(metrics[key], value, rel_tol=10 * rtol, abs_tol=rtol), (key, metrics[key], value)
    assert metrics["clip_frac"] > 0.05 and metrics["dual_clip_frac"] > 0.0


# --------------------------------------------------------------------------------------------------
# Fused hidden states -> clipped PG loss (the 6THV op) and its GEMM helper


@pytest.mark.skipif(SCALED_DOWN, reason="the CUDA addmm(out_dtype) path")
def test_add_mm_accumulates_bf16_products_in_fp32_in_place() -> None:
    """The ``addmm(out_dtype=float32)`` path exists here (else the dX accumulation loses precision)."""
    g = torch.Generator(device=DEVICE).manual_seed(3)
    a = torch.randn(512, 1024, generator=g, device=DEVICE).bfloat16()
    b = torch.randn(1024, 256, generator=g, device=DEVICE).bfloat16()
    acc = torch.randn(512, 256, generator=g, device=DEVICE)
    expected = acc + a.float() @ b.float()
    torch.addmm(acc.clone(), a, b, torch.float32)  # raises where the fast path is missing
    got = add_mm(acc, a, b, torch.float32)
    assert got.data_ptr() == acc.data_ptr() and got.dtype == torch.float32
    assert max_error(got, expected) <= 1e-3 * float(expected.abs().max())


@pytest.mark.parametrize("path", ["fused_clipped_pg", "loss_from_hidden"])
@pytest.mark.parametrize("grad_accum", ["weight", "float32"])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_fused_linear_pg_loss_at_real_size(
    dtype: torch.dtype, grad_accum: str, path: str, ieee_fp32: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loss, dX and dW of the fused ops against the fp32 truth (bf16: no worse than PyTorch in bf16 +
    1e-2 of each output's largest magnitude), 4 chunks, poisoned buffers: the ``triton`` backend's
    ``loss_from_hidden`` with ``FusedClippedPG`` (its fused linear PG strategy) and with ``ClippedPG``
    (any loss; a budget of 1.5 rows: one or two rows per chunk, as the masked tokens are left out)."""
    monkeypatch.setenv(_buffers.POISON_ENV, "1")
    rows, length, (_, h, v) = FUSED_ROWS, FUSED_LENGTH, SHAPES["llama3"]
    case = make_case((rows * length, h, v), dtype, seed=5)
    targets = torch.where(case.ignored, 0, case.targets)  # the mask, not ignore_index, drops tokens here
    mask = (~case.ignored).view(rows, length).float()
    truth_lp = torch_with_grads(dataclasses.replace(case, targets=targets), torch.float32)[0].view(rows, length)
    g = torch.Generator(device=DEVICE).manual_seed(6)
    batch = rlsdk.TrainBatch(
        mask=mask,
        advantages=torch.randn(rows, 1, generator=g, device=DEVICE).expand(rows, length) * mask,
        old_logprobs=truth_lp + 0.2 * torch.randn(rows, length, generator=g, device=DEVICE),
        ref_logprobs=truth_lp + 0.2 * torch.randn(rows, length, generator=g, device=DEVICE),
        rewards=torch.zeros(rows, device=DEVICE),
        group_ids=torch.zeros(rows, dtype=torch.long, device=DEVICE),
    )
    opts = {**PG_OPTIONS, "agg": "token-mean", "entropy_coef": 0.01}
    loss_fn = ClippedPG(**opts)

    def torch_path(compute: torch.dtype) -> tuple[float, Tensor, Tensor]:
        """clipped_pg on PyTorch log-probs in ``compute``: its gradient is the upstream of torch_with_grads."""
        lp_ent = torch_with_grads(dataclasses.replace(case, targets=targets), compute)
        lp = lp_ent[0].view(rows, length).double().requires_grad_(True)
        ent = lp_ent[1].view(rows, length).double().requires_grad_(True)
        out = loss_fn(
            lp,
            dataclasses.replace(
                batch,
                entropy=ent,
                **{k: getattr(batch, k).double() for k in ("mask", "advantages", "old_logprobs", "ref_logprobs")},
            ),
        )
        g_lp, g_ent = torch.autograd.grad(out.loss, [lp, ent])
        grads = torch_with_grads(
            dataclasses.replace(case, targets=targets, g_lp=g_lp.flatten().float(), g_ent=g_ent.flatten().float()),
            compute,
        )
        return float(out.loss.detach()), grads[2], grads[3]

    hx = case.hidden.detach().clone().requires_grad_(True)
    wx = case.weight.detach().clone().requires_grad_(True)
    if path == "fused_clipped_pg":
        backend = TritonLogprobBackend(**FUSED_CHUNKS, grad_accum=grad_accum)
        out = backend.loss_from_hidden(hx, wx, targets, batch, FusedClippedPG(**opts), temperature=TEMPERATURE).output
    else:
        row_mib = length * v * torch.empty((), dtype=dtype).element_size() / 2**20
        backend = TritonLogprobBackend(fuse_loss_mib=1.5 * row_mib, grad_accum=grad_accum)
        out = backend.loss_from_hidden(hx, wx, targets, batch, loss_fn, temperature=TEMPERATURE).output
    loss = out.loss
    loss.backward()
    assert_finite((loss.detach()[None], torch.tensor([float(out.metrics["entropy"])]), hx.grad, wx.grad))
    assert bool((hx.grad[case.ignored] == 0).all())
    truth = torch_path(torch.float32)
    ours = (float(loss.detach()), hx.grad, wx.grad)
    if dtype == torch.float32:
        assert abs(ours[0] - truth[0]) <= 1e-5 * max(abs(truth[0]), 1e-3)
        for mine, ref in zip(ours[1:], truth[1:], strict=True):
            assert max_error(mine, ref) <= FP32_ATOL + 1e-4 * float(ref.abs().max())
        return
    same = torch_path(dtype)
    assert abs(ours[0] - truth[0]) <= abs(same[0] - truth[0]) + BF16_TOL * max(abs(truth[0]), 1e-3)
    for name, mine, torch_same, ref in zip(("dX", "dW"), ours[1:], same[1:], truth[1:], strict=True):
        err_ours, err_torch = max_error(mine, ref), max_error(torch_same, ref)
        print(f"{path} {grad_accum} {name}: |ours - truth| {err_ours:.3g}, |torch bf16 - truth| {err_torch:.3g}")
        assert err_ours <= err_torch + BF16_TOL * float(ref.abs().max()), (name, err_ours, err_torch)
