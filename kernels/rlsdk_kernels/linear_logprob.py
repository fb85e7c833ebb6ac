"""Fused linear log-prob (+ entropy): Triton kernels and their autograd Function (a leaf op).

The ``triton`` logprob backend that calls them is a component of the plugin
(:class:`rlsdk_kernels.plugin.TritonLogprobBackend`). :func:`reduce_rows` and :func:`logits_to_grad`
(one launch of each kernel) are public for the op that fuses any loss
(:mod:`rlsdk_kernels.linear_loss`).

For tokens ``n`` with hidden state ``x_n`` [H], output weight ``W`` [V, H], target ``y_n`` and
temperature ``tau``::

    s_n    = x_n W^T / tau                         never materialised as [N, V]
    lse_n  = logsumexp(s_n)
    logp_n = s_{n, y_n} - lse_n
    Ent_n  = lse_n - sum_j p_{n, j} s_{n, j}       p = softmax(s)

Who multiplies ``X W^T`` is :attr:`KernelConfig.matmul`:

- ``"torch"`` (default): cuBLAS GEMMs write the logits into a bounded buffer (``[chunk, V]`` tokens in
  the forward, ``forward_mib``; ``[N, slice]`` vocabulary columns in the backward, ``backward_mib``) in
  the input dtype, as eager PyTorch rounds them; the Triton kernels only reduce and differentiate it.
  Every FLOP of the 8THV runs in the vendor GEMM.
- ``"triton"``: the kernels form each logit tile themselves with ``tl.dot`` over ``H`` in ``BLOCK_H``
  steps (fp32 accumulation; fp64 for fp64 inputs), so the forward holds no logits at all and they are
  never rounded to bf16.

Forward (``_forward_kernel``): grid ``(token blocks, vocabulary splits)``. Each program walks its
vocabulary split in ``BLOCK_V`` columns and keeps per row an online ``(m, S, P, s_y)``: running max,
``S = sum_j e^(s_j - m)``, ``P = sum_j e^(s_j - m) (s_j - m)`` and the target score. When ``m`` grows
to ``m'``: ``S' = S e^(m - m')``, ``P' = (P + S (m - m')) e^(m - m')``. The per-split partials are
merged by a tiny PyTorch epilogue (verl style: no atomics, no locks)::

    M = max_k m_k,  S = sum_k S_k e^(m_k - M),  P = sum_k (P_k + S_k (m_k - M)) e^(m_k - M)
    lse = M + log S,  Ent = log S - P / S,  logp = s_y - lse

Only ``hidden``, ``weight``, ``targets``, ``lse`` and ``Ent`` are saved for the backward (8 bytes per
token on top of the inputs).

Backward (``_grad_logits_kernel``, 8THV in total): the vocabulary is walked in slices; per slice the
logits are recomputed (GEMM or tiles) and the kernel writes::

    ds_j = g_logp (onehot_j - p_j) - g_ent p_j (log p_j + Ent),   dz = ds / tau

then two GEMMs give ``dX += dz W_slice`` (accumulated across slices in fp32) and
``dW_slice = dz^T X`` (one exact GEMM per slice, fp32 accumulation inside, no cross-slice sum).
This is rule 2 of kernels.md section 7 ("simplest fast path"); the dz slice is stored in the GEMM
dtype.

With ``vocab_group`` (a process group over which ``W`` is sharded by rows) each rank merges its
partials, the ranks all-gather them (4 values per token and rank) and merge them in rank order, and
the backward sums the fp32 ``dX`` over the group (see :func:`fused_linear_logprobs`).

Tokens whose target equals ``ignore_index`` get ``logp = 0``, ``Ent = 0`` and zero gradient. ``V`` and
``N`` need not be multiples of any block: padded columns are masked to ``-inf`` before any exp.

Under ``TRITON_INTERPRET=1`` (CPU tensors) every load is cast to fp32/fp64 right after ``tl.load``,
because the interpreter has no bf16 arithmetic (kernels.md section 6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from rlsdk.validation import check_bool, check_choice, check_logprob_inputs, check_number
from rlsdk_kernels import _compile
from rlsdk_kernels._buffers import empty, rows_within
from rlsdk_kernels._common import (
    GRAD_ACCUM,
    MIN_TRITON,
    check_optional_int,
    check_power_of_two,
    compute_dtype,
    triton_available,
    triton_problem,
)
from rlsdk_kernels._gemm import add_mm, gemm_operands

__all__ = [
    "CPU_TILES",
    "CUDA_TILES",
    "GRAD_ACCUM",
    "KernelConfig",
    "MATMULS",
    "MIN_TRITON",
    "fused_linear_logprobs",
    "logits_to_grad",
    "reduce_rows",
    "reference_logprobs",
    "triton_available",
    "triton_kernels",
    "triton_problem",
]

#: Default CUDA tiles and warps per ``matmul`` path: the widest whose sm_90 build has no register
#: spills (``benchmarks/kernel_resources.py``; untimed until a GPU session tunes them).
CUDA_TILES = {
    "torch": {"block_n": 16, "block_v": 256, "block_h": 64, "num_warps": 4},
    "triton": {"block_n": 64, "block_v": 128, "block_h": 32, "num_warps": 8},
}
#: Tiles under the interpreter (small, so fast in numpy).
CPU_TILES = {"block_n": 16, "block_v": 32, "block_h": 16}
_LOW_PRECISION = (torch.bfloat16, torch.float16)
#: Values of :attr:`KernelConfig.matmul`.
MATMULS = ("torch", "triton")
# MIN_TRITON, triton_problem and triton_available live in rlsdk_kernels._common (this module is their
# documented home and re-exports them); GRAD_ACCUM too.


@dataclass(frozen=True)
class KernelConfig:
    """Tile sizes and launch options of the fused log-prob kernels.

    Attributes:
        block_n: Tokens per tile (power of two, >= 16: the minimum of ``tl.dot`` on GPUs).
        block_v: Vocabulary columns per tile (power of two, >= 16).
        block_h: Hidden units per ``tl.dot`` step (power of two, >= 16).
        vocab_splits: Vocabulary splits of the forward grid (partials merged by the epilogue); None
            picks enough to fill the device (about two programs per SM on CUDA, 1 on CPU).
        matmul: Who multiplies ``X W^T``: ``"torch"`` (cuBLAS GEMMs into a bounded logits buffer:
            ``[chunk, V]`` in the forward, ``[N, slice]`` in the backward; the Triton kernels then only
            reduce and differentiate it) or ``"triton"`` (``tl.dot`` tiles inside the kernels, no
            logits buffer in the forward).
        forward_chunk: Tokens per forward chunk with ``matmul="torch"``; None: as many as fit ``forward_mib``.
        forward_mib: Memory budget of the forward logits chunk, in MiB.
        backward_slice: Vocabulary columns per backward slice; None: as many as fit ``backward_mib``.
        backward_mib: Memory budget of the backward ``[N, slice]`` buffer, in MiB (the fp32 ``dX``
            accumulator, ``4 N H`` bytes, comes on top).
        num_warps: Warps per program (CUDA only).
        allow_tf32: Let fp32 inputs use TF32 tensor cores in the ``tl.dot`` tiles (default False:
            IEEE fp32, as the ``torch`` backend computes; ``matmul="torch"`` follows PyTorch's setting).
    """

    block_n: int = 64
    block_v: int = 128
    block_h: int = 64
    vocab_splits: int | None = None
    matmul: str = "torch"
    forward_chunk: int | None = None
    forward_mib: float = 224.0
    backward_slice: int | None = None
    backward_mib: float = 96.0
    num_warps: int = 8
    allow_tf32: bool = False

    def __post_init__(self) -> None:
        for name in ("block_n", "block_v", "block_h"):
            check_power_of_two(getattr(self, name), f"logprob.{name}", low=16)
        if self.vocab_splits is not None:
            check_optional_int(self.vocab_splits, "logprob.vocab_splits", "None (auto)")
        check_choice(self.matmul, "logprob.matmul", MATMULS)
        for name in ("forward_chunk", "backward_slice"):
            if getattr(self, name) is not None:
                check_optional_int(getattr(self, name), f"logprob.{name}", "None (from the MiB budget)")
        for name in ("forward_mib", "backward_mib"):
            check_number(getattr(self, name), f"logprob.{name}", low=0.0, low_open=True)
        check_power_of_two(self.num_warps, "logprob.num_warps", low=1, high=32)
        check_bool(self.allow_tf32, "logprob.allow_tf32")


# --------------------------------------------------------------------------------------------------
# Triton kernels (built lazily: this module imports without triton)


_KERNELS: dict[str, Any] = {}


def triton_kernels() -> dict[str, Any]:
    """Compile-on-first-use table of the Triton kernels (imports triton here, not at module load)."""
    if _KERNELS:
        return _KERNELS
    import triton
    import triton.language as tl

    @triton.jit
    def _logit_tile(
        X,
        W,
        rows,
        cols,
        row_ok,
        col_ok,
        stride_xn,
        stride_xh,
        stride_wv,
        stride_wh,
        H: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_V: tl.constexpr,
        BLOCK_H: tl.constexpr,
        ACC: tl.constexpr,
        UPCAST: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """z = X[rows] W[cols]^T as a [BLOCK_N, BLOCK_V] tile in ACC (fp32 or fp64)."""
        acc = tl.zeros([BLOCK_N, BLOCK_V], dtype=ACC)
        for h0 in range(0, H, BLOCK_H):
            hs = h0 + tl.arange(0, BLOCK_H)
            h_ok = hs < H
            # int64 row offsets: V * H passes 2**31 at V=256000, H=8448 and beyond
            x_ptr = X + rows[:, None].to(tl.int64) * stride_xn + hs[None, :] * stride_xh
            w_ptr = W + cols[:, None].to(tl.int64) * stride_wv + hs[None, :] * stride_wh
            x = tl.load(x_ptr, mask=row_ok[:, None] & h_ok[None, :], other=0.0)
            w = tl.load(w_ptr, mask=col_ok[:, None] & h_ok[None, :], other=0.0)
            if UPCAST:
                x = x.to(ACC)
                w = w.to(ACC)
            acc = tl.dot(x, tl.trans(w), acc, input_precision=PRECISION, out_dtype=ACC)
        return acc

    # Kernels resolve the helpers they call in this module's globals (the interpreter ignores closures).
    globals()["_logit_tile"] = _logit_tile

    @triton.jit
    def _forward_kernel(
        X,
        W,
        Z,
        Y,
        M_OUT,
        S_OUT,
        P_OUT,
        T_OUT,
        N,
        V,
        stride_xn,
        stride_xh,
        stride_wv,
        stride_wh,
        stride_zn,
        stride_part,
        inv_temp,
        H: tl.constexpr,
        BLOCKS_PER_SPLIT: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_V: tl.constexpr,
        BLOCK_H: tl.constexpr,
        ACC: tl.constexpr,
        UPCAST: tl.constexpr,
        PRECISION: tl.constexpr,
        WITH_ENTROPY: tl.constexpr,
        FROM_LOGITS: tl.constexpr,
    ):
        """Per (token block, vocabulary split): online (m, S, P, s_y) partials, written at [split, row].

        The logit tiles are read from ``Z`` (``FROM_LOGITS``: a cuBLAS GEMM wrote them) or formed
        from ``X`` and ``W`` with ``tl.dot``.
        """
        pid_n = tl.program_id(0)
        pid_s = tl.program_id(1)
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < N
        y = tl.load(Y + rows, mask=row_ok, other=-1)
        m = tl.full([BLOCK_N], float("-inf"), dtype=ACC)
        s_sum = tl.zeros([BLOCK_N], dtype=ACC)
        p_sum = tl.zeros([BLOCK_N], dtype=ACC)
        target = tl.zeros([BLOCK_N], dtype=ACC)
        v_begin = pid_s * BLOCKS_PER_SPLIT * BLOCK_V
        for vb in range(0, BLOCKS_PER_SPLIT):
            cols = v_begin + vb * BLOCK_V + tl.arange(0, BLOCK_V)
            col_ok = cols < V
            if FROM_LOGITS:
                z_ptr = Z + rows[:, None].to(tl.int64) * stride_zn + cols[None, :]
                z = tl.load(z_ptr, mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(ACC)
            else:
                z = _logit_tile(
                    X,
                    W,
                    rows,
                    cols,
                    row_ok,
                    col_ok,
                    stride_xn,
                    stride_xh,
                    stride_wv,
                    stride_wh,
                    H,
                    BLOCK_N,
                    BLOCK_V,
                    BLOCK_H,
                    ACC,
                    UPCAST,
                    PRECISION,
                )
            s = tl.where(col_ok[None, :], z * inv_temp, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, axis=1))  # finite: the first block of a split has a valid column
            alpha = tl.exp(m - m_new)  # 0 on the first block (m = -inf)
            shifted = tl.where(col_ok[None, :], s - m_new[:, None], 0.0)  # finite everywhere: no 0 * inf
            e = tl.where(col_ok[None, :], tl.exp(shifted), 0.0)
            if WITH_ENTROPY:
                moved = tl.where(m > float("-inf"), m - m_new, 0.0)  # avoid 0 * -inf on the first block
                p_sum = (p_sum + s_sum * moved) * alpha + tl.sum(e * shifted, axis=1)
            s_sum = s_sum * alpha + tl.sum(e, axis=1)
            m = m_new
            hit = (cols[None, :] == y[:, None]) & col_ok[None, :]
            target += tl.sum(tl.where(hit, s, 0.0), axis=1)
        out = pid_s * stride_part + rows
        tl.store(M_OUT + out, m, mask=row_ok)
        tl.store(S_OUT + out, s_sum, mask=row_ok)
        tl.store(P_OUT + out, p_sum, mask=row_ok)
        tl.store(T_OUT + out, target, mask=row_ok)

    @triton.jit
    def _grad_logits_kernel(
        X,
        W,
        Y,
        LSE,
        ENT,
        G_LP,
        G_ENT,
        DZ,
        N,
        v_start,
        v_stop,
        stride_xn,
        stride_xh,
        stride_wv,
        stride_wh,
        stride_dzn,
        inv_temp,
        ignore_index,
        H: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_V: tl.constexpr,
        BLOCK_H: tl.constexpr,
        ACC: tl.constexpr,
        UPCAST: tl.constexpr,
        PRECISION: tl.constexpr,
        HAS_G_LP: tl.constexpr,
        HAS_G_ENT: tl.constexpr,
        FROM_LOGITS: tl.constexpr,
    ):
        """dz[:, v - v_start] for v in [v_start, v_stop): recomputed logits, softmax and the section-0 gradient.

        With ``FROM_LOGITS`` the logits are read from ``DZ`` itself (a cuBLAS GEMM wrote them there)
        and overwritten by ``dz``, each tile by the program that read it.
        """
        pid_n = tl.program_id(0)
        pid_v = tl.program_id(1)
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < N
        cols = v_start + pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
        col_ok = cols < v_stop
        y = tl.load(Y + rows, mask=row_ok, other=ignore_index)
        valid = row_ok & (y != ignore_index)
        lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
        ptr = DZ + rows[:, None].to(tl.int64) * stride_dzn + (cols - v_start)[None, :]
        if FROM_LOGITS:
            z = tl.load(ptr, mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(ACC)
        else:
            z = _logit_tile(
                X,
                W,
                rows,
                cols,
                row_ok,
                col_ok,
                stride_xn,
                stride_xh,
                stride_wv,
                stride_wh,
                H,
                BLOCK_N,
                BLOCK_V,
                BLOCK_H,
                ACC,
                UPCAST,
                PRECISION,
            )
        log_p = tl.where(col_ok[None, :], z * inv_temp - lse[:, None], 0.0)  # finite: no 0 * inf below
        p = tl.where(col_ok[None, :], tl.exp(log_p), 0.0)
        ds = tl.zeros([BLOCK_N, BLOCK_V], dtype=ACC)
        if HAS_G_LP:
            g_lp = tl.where(valid, tl.load(G_LP + rows, mask=row_ok, other=0.0).to(ACC), 0.0)
            onehot = tl.where(cols[None, :] == y[:, None], 1.0, 0.0)
            ds += g_lp[:, None] * (onehot - p)
        if HAS_G_ENT:
            g_ent = tl.where(valid, tl.load(G_ENT + rows, mask=row_ok, other=0.0).to(ACC), 0.0)
            ent = tl.load(ENT + rows, mask=row_ok, other=0.0)
            ds -= g_ent[:, None] * (p * (log_p + ent[:, None]))
        dz = tl.where(valid[:, None], ds * inv_temp, 0.0)  # ignored rows: 0 even where their logits are not finite
        tl.store(ptr, dz.to(DZ.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])

    _KERNELS.update(forward=_forward_kernel, grad_logits=_grad_logits_kernel, tl=tl, triton=triton)
    return _KERNELS


# --------------------------------------------------------------------------------------------------
# Launch helpers


def _launch_options(hidden: Tensor, weight: Tensor, config: KernelConfig) -> dict[str, Any]:
    """Constexpr options shared by both kernels: accumulation dtype, upcast-on-load, dot precision."""
    tl = triton_kernels()["tl"]
    acc = compute_dtype(hidden, weight)
    same_low = hidden.dtype == weight.dtype and hidden.dtype in _LOW_PRECISION
    # bf16/fp16 go straight into tl.dot on GPUs; the interpreter cannot do bf16 arithmetic.
    upcast = not (hidden.is_cuda and same_low)
    if not upcast:
        precision = None  # bf16/fp16 operands: Triton's default tensor-core dot
    elif config.allow_tf32 and acc == torch.float32 and hidden.is_cuda:
        precision = "tf32"
    else:
        precision = "ieee"  # fp32/fp64 operands: exact products, as the torch backend
    return {
        "ACC": tl.float64 if acc == torch.float64 else tl.float32,
        "UPCAST": upcast,
        "PRECISION": precision,
    }


def _vocab_splits(n_token_blocks: int, n_vocab_blocks: int, device: torch.device, config: KernelConfig) -> int:
    if config.vocab_splits is not None:
        return max(1, min(config.vocab_splits, n_vocab_blocks))
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(n_vocab_blocks, math.ceil(2 * sms / n_token_blocks)))


def _split_plan(n: int, vocab: int, device: torch.device, config: KernelConfig) -> tuple[int, int]:
    """``(vocabulary splits, blocks per split)`` of the forward grid for ``n`` rows."""
    triton = triton_kernels()["triton"]
    v_blocks = triton.cdiv(vocab, config.block_v)
    splits = _vocab_splits(triton.cdiv(n, config.block_n), v_blocks, device, config)
    per_split = triton.cdiv(v_blocks, splits)
    return triton.cdiv(v_blocks, per_split), per_split  # every split starts at a valid column


def _launch_forward(
    hidden: Tensor,
    weight: Tensor,
    logits: Tensor | None,
    targets: Tensor,
    parts: Tensor,
    per_split: int,
    temperature: float,
    with_entropy: bool,
    config: KernelConfig,
) -> None:
    """One launch of the forward kernel: the ``(m, S, P, s_y)`` partials of the rows of ``hidden``
    into ``parts`` [4, splits, n] (a view; its rows may be a slice of a larger buffer)."""
    k = triton_kernels()
    n, h = hidden.shape
    z = logits if logits is not None else hidden  # an unused pointer without logits
    extra = {} if not hidden.is_cuda else {"num_warps": config.num_warps}
    k["forward"][(k["triton"].cdiv(n, config.block_n), parts.shape[1])](
        hidden,
        weight,
        z,
        targets,
        parts[0],
        parts[1],
        parts[2],
        parts[3],
        n,
        weight.shape[0],
        hidden.stride(0),
        hidden.stride(1),
        weight.stride(0),
        weight.stride(1),
        z.stride(0),
        parts.stride(1),
        1.0 / temperature,
        H=h,
        BLOCKS_PER_SPLIT=per_split,
        BLOCK_N=config.block_n,
        BLOCK_V=config.block_v,
        BLOCK_H=config.block_h,
        WITH_ENTROPY=with_entropy,
        FROM_LOGITS=logits is not None,
        **_launch_options(hidden, weight, config),
        **extra,
    )


def _combine(parts: Tensor) -> Tensor:
    """``[4, k, n]`` partials ``(m, S, P, s_y)`` merged into ``[4, 1, n]`` (the rule of the module docstring)."""
    m, s, p, t = parts
    top = m.max(dim=0).values
    scale = torch.exp(m - top)
    return torch.stack([top, (s * scale).sum(0), ((p + s * (m - top)) * scale).sum(0), t.sum(0)])[:, None]


def _merge(
    parts: Tensor, targets: Tensor, ignore_index: int, with_entropy: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(logprobs, entropy, lse, raw_entropy)`` from the per-split partials (see the module docstring)."""
    top, sum_exp, sum_ps, target = _combine(parts)[:, 0]
    log_sum_exp = torch.log(sum_exp)
    lse = top + log_sum_exp
    valid = targets != ignore_index
    logprobs = torch.where(valid, target - lse, torch.zeros_like(lse))
    if with_entropy:
        raw_entropy = log_sum_exp - sum_ps / sum_exp
        entropy = torch.where(valid, raw_entropy, torch.zeros_like(raw_entropy))
    else:
        raw_entropy = entropy = torch.zeros_like(lse)
    return logprobs, entropy, lse, raw_entropy


def reduce_rows(
    hidden: Tensor,
    weight: Tensor,
    logits: Tensor | None,
    targets: Tensor,
    temperature: float,
    with_entropy: bool,
    ignore_index: int,
    config: KernelConfig,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(logprobs, entropy, lse, raw_entropy)`` of the tokens of ``hidden`` [n, H], in the compute dtype.

    One launch of the forward kernel. Its logit tiles are read from ``logits`` [n, V] (rows
    contiguous) when given, else formed from ``hidden`` and ``weight`` with ``tl.dot``. The per-split
    partials are then merged (see the module docstring).
    """
    parts = _row_partials(hidden, weight, logits, targets, temperature, with_entropy, config)
    return _merge(parts, targets, ignore_index, with_entropy)


def _row_partials(
    hidden: Tensor,
    weight: Tensor,
    logits: Tensor | None,
    targets: Tensor,
    temperature: float,
    with_entropy: bool,
    config: KernelConfig,
) -> Tensor:
    """The ``[4, splits, n]`` partials of one launch of the forward kernel over all of ``hidden``."""
    n = hidden.shape[0]
    splits, per_split = _split_plan(n, weight.shape[0], hidden.device, config)
    parts = empty(4, splits, n, dtype=compute_dtype(hidden, weight), device=hidden.device)
    _launch_forward(hidden, weight, logits, targets, parts, per_split, temperature, with_entropy, config)
    return parts


def logits_to_grad(
    hidden: Tensor,
    weight: Tensor,
    dz: Tensor,
    v_start: int,
    targets: Tensor,
    lse: Tensor,
    entropy: Tensor,
    grad_logprobs: Tensor | None,
    grad_entropy: Tensor | None,
    temperature: float,
    ignore_index: int,
    config: KernelConfig,
    from_logits: bool,
) -> None:
    """Write ``dz`` [n, width]: the gradient w.r.t. the logits of columns ``v_start ...`` (one launch).

    With ``from_logits`` ``dz`` holds those logits already (a cuBLAS GEMM wrote them) and is
    overwritten in place; else the kernel forms them from ``hidden`` and ``weight`` with ``tl.dot``.
    Tokens whose target is ``ignore_index`` get zero rows, whatever their logits.
    """
    k = triton_kernels()
    triton = k["triton"]
    n, h = hidden.shape
    width = dz.shape[1]
    g_lp = grad_logprobs.contiguous() if grad_logprobs is not None else lse  # dummy pointer when absent
    g_ent = grad_entropy.contiguous() if grad_entropy is not None else lse
    extra = {} if not hidden.is_cuda else {"num_warps": config.num_warps}
    grid = (triton.cdiv(n, config.block_n), triton.cdiv(width, config.block_v))
    k["grad_logits"][grid](
        hidden,
        weight,
        targets,
        lse,
        entropy,
        g_lp,
        g_ent,
        dz,
        n,
        v_start,
        v_start + width,
        hidden.stride(0),
        hidden.stride(1),
        weight.stride(0),
        weight.stride(1),
        dz.stride(0),
        1.0 / temperature,
        ignore_index,
        H=h,
        BLOCK_N=config.block_n,
        BLOCK_V=config.block_v,
        BLOCK_H=config.block_h,
        HAS_G_LP=grad_logprobs is not None,
        HAS_G_ENT=grad_entropy is not None,
        FROM_LOGITS=from_logits,
        **_launch_options(hidden, weight, config),
        **extra,
    )


# --------------------------------------------------------------------------------------------------
# Vocabulary parallelism: each rank of a process group holds a slice of W's rows (kernels.md section 7,
# rule 7). The forward gathers every rank's merged (m, S, P, s_y) partials, 4 values per token and
# rank, and merges them in rank order, so every rank gets the same bits; the backward forms dz for
# the local columns with the global lse and Ent, and sums dX over the ranks (in fp32).

#: Target id, inside a shard's kernels, of ignored tokens, and of tokens whose target lies in another shard.
_IGNORED, _ELSEWHERE = -1, -2


def _vocab_shard(group: Any, hidden: Tensor, weight: Tensor) -> tuple[int, int]:
    """``(first vocabulary id of this rank's shard, global V)``, from every rank's ``(N, H, V_rank)``.

    Every rank gathers the same numbers, so a mismatch raises the same error on every rank (none is
    left waiting in a collective).
    """
    import torch.distributed as dist

    world, rank = dist.get_world_size(group), dist.get_rank(group)
    mine = torch.tensor([hidden.shape[0], hidden.shape[-1], weight.shape[0]], dtype=torch.int64, device=hidden.device)
    every = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(every, mine, group=group)
    shapes = [tuple(int(v) for v in t.tolist()) for t in every]
    if len({(n, h) for n, h, _ in shapes}) > 1:
        raise ValueError(
            "triton logprob backend (vocab_group): every rank must pass the same hidden states [N, H] and "
            f"targets; got (N, H) = {[(n, h) for n, h, _ in shapes]} on ranks 0..{world - 1}"
        )
    sizes = [v for _, _, v in shapes]
    return sum(sizes[:rank]), sum(sizes)


def _local_targets(targets: Tensor, ignore_index: int, start: int, stop: int) -> Tensor:
    """Global ``targets`` as ids into the shard ``[start, stop)``: :data:`_IGNORED` for ignored tokens,
    :data:`_ELSEWHERE` for targets of other shards (no column of this shard matches them)."""
    inside = (targets >= start) & (targets < stop)
    local = torch.where(inside, targets - start, torch.full_like(targets, _ELSEWHERE))
    return torch.where(targets == ignore_index, torch.full_like(targets, _IGNORED), local)


def _gather_partials(parts: Tensor, group: Any) -> Tensor:
    """This rank's ``[4, k, n]`` partials merged to ``[4, 1, n]``, gathered to ``[4, ranks, n]`` in rank order."""
    import torch.distributed as dist

    local = _combine(parts).contiguous()
    every = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(every, local, group=group)
    return torch.cat(every, dim=1)


def _forward(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    temperature: float,
    with_entropy: bool,
    ignore_index: int,
    config: KernelConfig,
    group: Any = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(logprobs, entropy, lse, raw_entropy)`` in the compute dtype; see the module docstring.

    With ``matmul="torch"`` the tokens are taken in chunks: a cuBLAS GEMM writes the chunk's logits,
    the kernel reduces them; with ``"triton"`` one launch forms the logit tiles itself. With a
    ``group`` (vocabulary parallel), ``weight`` is this rank's shard and the partials of every rank
    are gathered before the merge.
    """
    n, vocab = hidden.shape[0], weight.shape[0]
    if config.matmul == "triton":
        parts = _row_partials(hidden, weight, None, targets, temperature, with_entropy, config)
    else:
        x, w = gemm_operands(hidden, weight)
        chunk = min(config.forward_chunk or rows_within(config.forward_mib, vocab, x.dtype, n), n)
        buf = torch.empty(chunk, vocab, dtype=x.dtype, device=hidden.device)
        splits, per_split = _split_plan(chunk, vocab, hidden.device, config)
        parts = empty(4, splits, n, dtype=compute_dtype(hidden, weight), device=hidden.device)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            logits = torch.mm(x[start:stop], w.T, out=buf[: stop - start])
            _launch_forward(
                hidden[start:stop],
                weight,
                logits,
                targets[start:stop],
                parts[:, :, start:stop],
                per_split,
                temperature,
                with_entropy,
                config,
            )
    if group is not None:
        parts = _gather_partials(parts, group)
    return _merge(parts, targets, ignore_index, with_entropy)  # once, for all chunks (and ranks)


def _backward(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    lse: Tensor,
    entropy: Tensor,
    grad_logprobs: Tensor | None,
    grad_entropy: Tensor | None,
    temperature: float,
    ignore_index: int,
    need_hidden: bool,
    need_weight: bool,
    config: KernelConfig,
    group: Any = None,
) -> tuple[Tensor | None, Tensor | None]:
    """``(dX, dW)`` by vocabulary slices: dz (Triton), then ``dX += dz W_s`` (fp32) and ``dW_s = dz^T X``.

    With ``matmul="torch"`` a cuBLAS GEMM first writes the slice's logits into the dz buffer and the
    kernel turns them into dz in place; with ``"triton"`` the kernel forms the logit tiles itself.
    With a ``group`` (vocabulary parallel) the fp32 ``dX`` is summed over its ranks; ``dW`` is this
    rank's shard.
    """
    n = hidden.shape[0]
    vocab = weight.shape[0]
    acc = compute_dtype(hidden, weight)
    from_logits = config.matmul == "torch"
    if from_logits:
        x, w = gemm_operands(hidden, weight)
    else:
        gemm_dtype = acc if _launch_options(hidden, weight, config)["UPCAST"] else hidden.dtype
        x, w = hidden.to(gemm_dtype), weight
    grad_x = None
    grad_w = empty(*weight.shape, dtype=weight.dtype, device=weight.device) if need_weight else None
    width = min(config.backward_slice or rows_within(config.backward_mib, n, x.dtype, vocab), vocab)
    dz_flat = empty(n * width, dtype=x.dtype, device=hidden.device)
    for start in range(0, vocab, width):
        stop = min(start + width, vocab)
        dz_s = dz_flat[: n * (stop - start)].view(n, stop - start)  # contiguous, also for the last slice
        w_s = w[start:stop].to(x.dtype)
        if from_logits:
            torch.mm(x, w_s.T, out=dz_s)
        logits_to_grad(
            hidden,
            weight,
            dz_s,
            start,
            targets,
            lse,
            entropy,
            grad_logprobs,
            grad_entropy,
            temperature,
            ignore_index,
            config,
            from_logits,
        )
        if need_hidden:
            grad_x = add_mm(grad_x, dz_s, w_s, acc)  # accumulated across slices in fp32
        if grad_w is not None and grad_w.dtype == x.dtype:  # one exact GEMM per slice, no temporary
            torch.mm(dz_s.T, x, out=grad_w[start:stop])
        elif grad_w is not None:
            grad_w[start:stop] = (dz_s.T @ x).to(weight.dtype)
    del dz_flat, dz_s  # free the dz buffer before dX is rounded to the input dtype: a lower peak
    if group is not None and grad_x is not None:
        import torch.distributed as dist

        dist.all_reduce(grad_x, group=group)  # in fp32, before the rounding
    return (grad_x.to(hidden.dtype) if grad_x is not None else None), grad_w


class _FusedLinearLogprob(torch.autograd.Function):
    """Autograd Function of :func:`fused_linear_logprobs` (saves X, W, targets, lse and Ent only)."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        hidden: Tensor,
        weight: Tensor,
        targets: Tensor,
        temperature: float,
        with_entropy: bool,
        ignore_index: int,
        config: KernelConfig,
        group: Any,
    ) -> tuple[Tensor, Tensor]:
        logprobs, entropy, lse, raw_entropy = _forward(
            hidden, weight, targets, temperature, with_entropy, ignore_index, config, group
        )
        if not with_entropy:
            ctx.mark_non_differentiable(entropy)
        ctx.save_for_backward(hidden, weight, targets, lse, raw_entropy)
        ctx.temperature, ctx.with_entropy = temperature, with_entropy
        ctx.ignore_index, ctx.config, ctx.group = ignore_index, config, group
        ctx.set_materialize_grads(False)
        return logprobs, entropy

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_logprobs: Tensor | None, grad_entropy: Tensor | None):  # type: ignore[override]
        hidden, weight, targets, lse, entropy = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not ctx.with_entropy:
            grad_entropy = None
        if (grad_logprobs is None and grad_entropy is None) or not (need_hidden or need_weight):
            return None, None, None, None, None, None, None, None
        grad_x, grad_w = _backward(
            hidden,
            weight,
            targets,
            lse,
            entropy,
            grad_logprobs,
            grad_entropy,
            ctx.temperature,
            ctx.ignore_index,
            need_hidden,
            need_weight,
            ctx.config,
            ctx.group,
        )
        return grad_x, grad_w, None, None, None, None, None, None


@_compile.disable
def fused_linear_logprobs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    ignore_index: int = -100,
    config: KernelConfig | None = None,
    *,
    vocab_group: Any = None,
) -> tuple[Tensor, Tensor | None]:
    """Differentiable per-token log-probabilities (and entropies) without the ``[N, V]`` logits.

    Args:
        hidden: ``[N, H]`` hidden states (bf16, fp16, fp32 or fp64; CUDA, or CPU under ``TRITON_INTERPRET=1``).
        weight: ``[V, H]`` output-layer weight, same device; with ``vocab_group``, this rank's shard.
        targets: ``[N]`` integer token ids in ``[0, V)``, or ``ignore_index`` for tokens to skip.
        temperature: Divides the logits, exactly once (``s = x W^T / tau``).
        with_entropy: Also compute the entropy of ``softmax(s)`` (differentiable).
        ignore_index: Target id of skipped tokens: their log-prob and entropy are 0, their gradient 0.
        config: Tile sizes; default :class:`KernelConfig` on CUDA, 16-wide tiles otherwise.
        vocab_group: A ``torch.distributed`` process group over which the vocabulary is sharded
            (tensor parallelism of the output layer). Rank ``r`` of the group passes rows
            ``[V_0 + ... + V_{r-1}, ... + V_r)`` of the full weight (shards may differ in size), and
            every rank passes the same ``hidden``, ``targets`` and options; ``targets`` are global ids.
            Every rank gets the same log-probs and entropies and the full ``dX`` (already summed over
            the group: do not all-reduce it again), and the ``dW`` of its own shard. The
            communication is two all-gathers in the forward (the shard sizes, then 4 values per token)
            and one all-reduce of the fp32 ``dX`` in the backward.

    Returns:
        ``(logprobs [N], entropy [N] or None)`` in fp32 (fp64 for fp64 inputs).
    """
    backend = "triton logprob backend"
    kernel_targets, kernel_ignore, vocab = targets, ignore_index, None
    if vocab_group is not None:
        start, vocab = _vocab_shard(vocab_group, hidden, weight)
        backend += f" (vocab_group: this rank's shard is ids [{start}, {start + weight.shape[0]}) of {vocab})"
    check_logprob_inputs(hidden, weight, targets, temperature, ignore_index=ignore_index, vocab=vocab, backend=backend)
    if vocab_group is not None:
        kernel_targets = _local_targets(targets, ignore_index, start, start + weight.shape[0])
        kernel_ignore = _IGNORED
    if config is None:
        config = KernelConfig(**(CUDA_TILES["torch"] if hidden.is_cuda else CPU_TILES))
    if hidden.shape[0] == 0:
        empty = (hidden.sum(-1) + weight.sum() * 0).to(compute_dtype(hidden, weight))
        return empty, (empty if with_entropy else None)
    logprobs, entropy = _FusedLinearLogprob.apply(
        hidden,
        weight,
        kernel_targets.contiguous(),
        float(temperature),
        bool(with_entropy),
        int(kernel_ignore),
        config,
        vocab_group,
    )
    return logprobs, (entropy if with_entropy else None)


def reference_logprobs(
    hidden: Tensor, weight: Tensor, targets: Tensor, temperature: float = 1.0, ignore_index: int = -100
) -> tuple[Tensor, Tensor]:
    """The PyTorch oracle of the kernels (materialises the logits): ``(logprobs, entropy)`` in the compute dtype.

    ``log_softmax(x W^T / tau)[y]`` and ``-sum_j p_j log p_j``, zero where ``targets == ignore_index``.
    """
    dtype = compute_dtype(hidden, weight)
    log_p = torch.log_softmax(hidden.to(dtype) @ weight.to(dtype).T / temperature, dim=-1)
    valid = targets != ignore_index
    lp = log_p.gather(-1, torch.where(valid, targets, 0).long()[:, None]).squeeze(-1)
    ent = -(log_p.exp() * log_p).sum(-1)
    zero = torch.zeros_like(lp)
    return torch.where(valid, lp, zero), torch.where(valid, ent, zero)
