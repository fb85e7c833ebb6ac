"""Fused hidden states -> clipped policy-gradient loss, gradients formed in the forward (6THV).

The standalone ``triton`` logprob backend must accept any upstream gradient, so its backward
recomputes the logits (8THV in all; see docs/kernels.md). Here the loss is
known inside the op, so each logit is computed once and its gradient formed at once; the backward
only scales the stored ``dX`` and ``dW`` by the incoming scalar.

For token chunks ``c`` of ``chunk`` tokens (sized so the chunk's logits fit ``chunk_mib``)::

    Z_c   = X_c W^T                              one GEMM, [chunk, V] in the input dtype (2THV in all)
    row kernel, per token n of the chunk (fp32, two sweeps over Z_c[n]):
        sweep 1: s = Z/tau; online max, sum e^(s-m), sum e^(s-m)(s-m), s_y
                 lse, logp = s_y - lse, Ent = lse - sum_j p_j s_j
                 the clipped_pg terms of rlsdk_kernels.pg_loss (mask first, then clamp, then exp):
                 L, KL, g_lp = w * d(L + kl_coef KL)/dlp,  g_ent = -entropy_coef * w
        sweep 2: Z_c[n, j] <- (g_lp (onehot_j - p_j) - g_ent p_j (log p_j + Ent)) / tau   (in place)
    dX_c  = dZ_c W                               one GEMM per chunk: exact (fp32 accumulation inside)
    dW   += dZ_c^T X_c                           one GEMM per chunk, accumulated across chunks

``w = m * s_b`` is the aggregation weight of the token (``rlsdk.functional.aggregation_weights``:
``1 / N_tok`` for token-mean, and so on, with the batch's global counts), so

    loss = sum w L + kl_coef sum w KL - entropy_coef sum w Ent

equals ``clipped_pg`` on the log-probs and entropies of the ``torch`` backend, with the same
metrics. Only trained tokens (``m > 0``) reach the GEMMs and the row kernel, so padding costs
nothing: where some token is untrained, the
chunks are taken over the trained tokens, each chunk's hidden states are gathered (an
``[chunk, H]`` copy) and its ``dX`` rows scattered back; untrained tokens get log-prob, entropy and
gradient rows 0. Finding them reads the mask from the device once per call.

**Memory.** Beyond the inputs and the gradients themselves: the ``[chunk, V]`` logits buffer
(``chunk_mib``, 384 MiB by default) plus ``O(N)`` per-token values. ``dW`` accumulates across
chunks in the weight's dtype by default (``grad_accum="weight"``: one rounding per chunk; with the
default budget ``N / chunk`` is 6 chunks at N=8192, V=128256 and 13 at N=16384, V=151936); with
``grad_accum="float32"`` it accumulates in an fp32 buffer (exact to fp32, ``4 V H`` more bytes;
kernels.md section 3 on bf16 accumulation across many small chunks). ``dX`` never accumulates
across chunks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from rlsdk import TrainBatch
from rlsdk.functional import aggregation_weights
from rlsdk.validation import check_choice, check_logprob_inputs, check_number
from rlsdk_kernels import _compile
from rlsdk_kernels._buffers import empty, rows_within
from rlsdk_kernels._chunk_grads import add_chunk_grads, hand_over
from rlsdk_kernels._common import GRAD_ACCUM, check_optional_int, check_power_of_two, compute_dtype, tl_dtype
from rlsdk_kernels._gemm import gemm_operands
from rlsdk_kernels.pg_loss import term_options, token_terms

__all__ = ["CPU_CONFIG", "FusedLossConfig", "GRAD_ACCUM", "chunk_size", "fused_linear_pg_loss", "triton_kernel"]

#: Number of per-program statistics: those of ``rlsdk_kernels.pg_loss`` (sums of w*L, w*KL, m*L, m*KL,
#: m*clip, m*rho, m*dual, m), then the sums of w*Ent and m*Ent.
NUM_STATS = 10
STAT_NAMES = (
    "w_loss",
    "w_kl",
    "pg_loss",
    "kl",
    "clip_frac",
    "ratio_mean",
    "dual_clip_frac",
    "tokens",
    "w_ent",
    "entropy",
)


@dataclass(frozen=True)
class FusedLossConfig:
    """Chunking and launch options of :func:`fused_linear_pg_loss`.

    The ``triton`` logprob backend builds one from its options (``fuse_loss_tokens``,
    ``fuse_loss_mib``, ``grad_accum``; :class:`rlsdk_kernels.plugin.TritonLogprobBackend`), with the
    row tiles of :data:`CPU_CONFIG` under the interpreter. A bad field is a :class:`rlsdk.ConfigError`
    naming it.

    Attributes:
        chunk_tokens: Tokens per chunk; None sizes chunks so their logits take at most ``chunk_mib``
            (a multiple of 128 tokens when that is at least 128).
        chunk_mib: Memory budget of one chunk's logits, in MiB.
        grad_accum: ``"weight"`` (accumulate ``dW`` across chunks in the weight's dtype) or
            ``"float32"`` (in an fp32 buffer; exact, ``4 V H`` extra bytes for bf16 weights).
        block_n: Tokens per program of the row kernel (power of two).
        block_v: Vocabulary columns per step of the row kernel (power of two, >= 16).
        num_warps: Warps per program (CUDA only).
    """

    chunk_tokens: int | None = None
    chunk_mib: float = 384.0
    grad_accum: str = "weight"
    block_n: int = 2
    block_v: int = 2048
    num_warps: int = 8

    def __post_init__(self) -> None:
        check_optional_int(self.chunk_tokens, "FusedLossConfig.chunk_tokens", "None (from chunk_mib)")
        check_number(self.chunk_mib, "FusedLossConfig.chunk_mib", low=0.0, low_open=True)
        check_choice(self.grad_accum, "FusedLossConfig.grad_accum", GRAD_ACCUM)
        for name, low in (("block_n", 1), ("block_v", 16), ("num_warps", 1)):
            check_power_of_two(getattr(self, name), f"FusedLossConfig.{name}", low=low)


#: Under the interpreter (CPU tensors) wider row tiles are faster, since numpy runs each program in turn.
CPU_CONFIG = FusedLossConfig(block_n=8, block_v=64)


@functools.lru_cache(maxsize=1)
def triton_kernel() -> Any:
    """Build the row kernel on first use (importing this module never imports triton)."""
    import triton
    import triton.language as tl

    pg_token_terms, store_pg_stats = token_terms()
    # The interpreter resolves helpers in the module globals, not in closures.
    globals().update(pg_token_terms=pg_token_terms, store_pg_stats=store_pg_stats)

    @triton.jit
    def linear_pg_rows_kernel(
        Z,
        stride_z,
        Y,
        OLD,
        REF,
        ADV,
        MASK,
        WTOK,
        PARAM,  # logits chunk [C, V] and per-token inputs [C]
        LP_OUT,
        ENT_OUT,
        STATS,  # outputs: logp [C], Ent [C], stats [programs, NSTAT]
        n_rows,
        inv_temp,
        entropy_coef,
        V: tl.constexpr,  # constexpr: the interpreter cannot loop to a runtime bound; fixed per model anyway
        HAS_REF: tl.constexpr,
        USE_KL: tl.constexpr,
        KL_KIND: tl.constexpr,
        KL_STRAIGHT: tl.constexpr,
        HAS_DUAL: tl.constexpr,
        HAS_DELTA: tl.constexpr,
        HAS_LR_CLAMP: tl.constexpr,
        HAS_IN_CLAMP: tl.constexpr,
        HAS_OUT_CLAMP: tl.constexpr,
        WRITE_GRAD: tl.constexpr,
        COMPUTE: tl.constexpr,
        NSTAT: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_V: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        row_ok = rows < n_rows
        row_off = rows.to(tl.int64) * stride_z
        y = tl.load(Y + rows, mask=row_ok, other=0)

        # Sweep 1: online (m, S, P, s_y), as the forward of rlsdk_kernels.linear_logprob.
        m = tl.full([BLOCK_N], float("-inf"), dtype=COMPUTE)
        s_sum = tl.zeros([BLOCK_N], dtype=COMPUTE)
        p_sum = tl.zeros([BLOCK_N], dtype=COMPUTE)
        target = tl.zeros([BLOCK_N], dtype=COMPUTE)
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            col_ok = cols < V
            z = tl.load(Z + row_off[:, None] + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
            s = tl.where(col_ok[None, :], z.to(COMPUTE) * inv_temp, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, axis=1))
            alpha = tl.exp(m - m_new)
            shifted = tl.where(col_ok[None, :], s - m_new[:, None], 0.0)
            e = tl.where(col_ok[None, :], tl.exp(shifted), 0.0)
            moved = tl.where(m > float("-inf"), m - m_new, 0.0)
            p_sum = (p_sum + s_sum * moved) * alpha + tl.sum(e * shifted, axis=1)
            s_sum = s_sum * alpha + tl.sum(e, axis=1)
            m = m_new
            target += tl.sum(tl.where((cols[None, :] == y[:, None]) & col_ok[None, :], s, 0.0), axis=1)
        log_s = tl.log(s_sum)
        lse = m + log_s
        ent = log_s - p_sum / s_sum
        logp = target - lse
        tl.store(LP_OUT + rows, logp, mask=row_ok)
        tl.store(ENT_OUT + rows, ent, mask=row_ok)

        # The loss terms; masked tokens are zeroed before any arithmetic.
        mk = tl.load(MASK + rows, mask=row_ok, other=0).to(COMPUTE)
        valid = mk > 0
        zero = tl.zeros([BLOCK_N], dtype=COMPUTE)
        lp = tl.where(valid, logp, zero)
        old = tl.where(valid, tl.load(OLD + rows, mask=row_ok, other=0).to(COMPUTE), zero)
        adv = tl.where(valid, tl.load(ADV + rows, mask=row_ok, other=0).to(COMPUTE), zero)
        ref = zero
        if HAS_REF:
            ref = tl.where(valid, tl.load(REF + rows, mask=row_ok, other=0).to(COMPUTE), zero)
        w = tl.where(valid, tl.load(WTOK + rows, mask=row_ok, other=0).to(COMPUTE), zero)
        loss, kl, grad, clip_flag, ratio, dual_flag = pg_token_terms(
            lp,
            old,
            ref,
            adv,
            valid,
            PARAM,
            HAS_REF,
            USE_KL,
            KL_KIND,
            KL_STRAIGHT,
            HAS_DUAL,
            HAS_DELTA,
            HAS_LR_CLAMP,
            HAS_IN_CLAMP,
            HAS_OUT_CLAMP,
        )
        ent_v = tl.where(valid, ent, zero)
        base = STATS + pid.to(tl.int64) * NSTAT
        store_pg_stats(base, valid, mk, w, loss, kl, clip_flag, ratio, dual_flag)
        tl.store(base + 8, tl.sum(w * ent_v, axis=0))
        tl.store(base + 9, tl.sum(tl.where(valid, mk, zero) * ent_v, axis=0))

        # Sweep 2: dZ in place of Z (each program owns its rows); zero on masked rows.
        if WRITE_GRAD:
            g_lp = tl.where(valid, w * grad, zero)
            g_ent = tl.where(valid, -entropy_coef * w, zero)
            for v0 in range(0, V, BLOCK_V):
                cols = v0 + tl.arange(0, BLOCK_V)
                col_ok = cols < V
                ok = row_ok[:, None] & col_ok[None, :]
                z = tl.load(Z + row_off[:, None] + cols[None, :], mask=ok, other=0.0).to(COMPUTE)
                log_p = tl.where(col_ok[None, :], z * inv_temp - lse[:, None], 0.0)
                p = tl.where(col_ok[None, :], tl.exp(log_p), 0.0)
                onehot = tl.where(cols[None, :] == y[:, None], 1.0, 0.0)
                ds = g_lp[:, None] * (onehot - p) - g_ent[:, None] * (p * (log_p + ent[:, None]))
                dz = tl.where(valid[:, None], ds * inv_temp, 0.0)
                tl.store(Z + row_off[:, None] + cols[None, :], dz.to(Z.dtype.element_ty), mask=ok)

    return linear_pg_rows_kernel


def chunk_size(n: int, vocab: int, dtype: torch.dtype, config: FusedLossConfig) -> int:
    """Tokens per chunk: ``config.chunk_tokens``, else as many as fit ``chunk_mib`` (a multiple of 128
    when at least 128), never more than ``n`` and never less than 1."""
    if config.chunk_tokens is not None:
        return max(1, min(config.chunk_tokens, n))
    return rows_within(config.chunk_mib, vocab, dtype, n)


def _compute(
    hidden: Tensor,
    weight: Tensor,
    index: Tensor | None,
    targets: Tensor,
    tokens: dict[str, Tensor],
    opts: dict[str, Any],
    temperature: float,
    need_x: bool,
    need_w: bool,
    config: FusedLossConfig,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """``(stats [NSTAT], logp [n], Ent [n], dX or None, dW or None)`` of the ``n`` tokens at ``index``
    (all tokens when None; ``targets`` and ``tokens`` hold those ``n``); see the module docstring."""
    import triton

    n = hidden.shape[0] if index is None else index.numel()
    vocab = weight.shape[0]
    x, w = gemm_operands(hidden, weight)
    gemm, acc = x.dtype, compute_dtype(hidden, weight)
    params, flags = term_options(opts, tokens["ref"] is not None, acc, hidden.device)
    chunk = chunk_size(n, vocab, gemm, config)
    programs = [triton.cdiv(min(chunk, n - start), config.block_n) for start in range(0, n, chunk)]
    buf = torch.empty(min(chunk, n), vocab, dtype=gemm, device=hidden.device)
    logp, ent = empty(n, dtype=acc, device=hidden.device), empty(n, dtype=acc, device=hidden.device)
    stats = empty(sum(programs), NUM_STATS, dtype=acc, device=hidden.device)
    new = empty if index is None else torch.zeros  # dX is 0 at the tokens left out
    grad_x = new(hidden.shape, dtype=hidden.dtype, device=hidden.device) if need_x else None
    accum = acc if config.grad_accum == "float32" else gemm
    grad_w: Tensor | None = None
    extra = {"num_warps": config.num_warps} if hidden.is_cuda else {}
    ref = tokens["ref"] if tokens["ref"] is not None else tokens["old"]  # a dummy pointer without a reference
    first = 0  # first stats row of the chunk
    for start, count in zip(range(0, n, chunk), programs):
        stop = min(start + chunk, n)
        rows = stop - start
        z = buf[:rows]
        at = slice(start, stop) if index is None else index[start:stop]
        x_c = x[at]  # a gathered copy when index is given
        torch.mm(x_c, w.T, out=z)
        triton_kernel()[(count,)](
            z,
            z.stride(0),
            targets[start:stop],
            tokens["old"][start:stop],
            ref[start:stop],
            tokens["adv"][start:stop],
            tokens["mask"][start:stop],
            tokens["w"][start:stop],
            params,
            logp[start:stop],
            ent[start:stop],
            stats[first:],
            rows,
            1.0 / temperature,
            float(opts["entropy_coef"]),
            V=vocab,
            **flags,
            WRITE_GRAD=need_x or need_w,
            COMPUTE=tl_dtype(acc),
            NSTAT=NUM_STATS,
            BLOCK_N=config.block_n,
            BLOCK_V=config.block_v,
            **extra,
        )
        first += count
        if need_x or need_w:
            grad_w = add_chunk_grads(z, x_c, w, grad_x, at, grad_w, need_w, accum)
    if grad_w is not None and grad_w.dtype != weight.dtype:
        grad_w = grad_w.to(weight.dtype)
    return stats.sum(0), logp, ent, grad_x, grad_w


class _LinearPGFunction(torch.autograd.Function):
    """``(loss, stats, logp, Ent) = f(hidden, weight)``: gradients formed in the forward, scaled in the backward."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        hidden: Tensor,
        weight: Tensor,
        index: Tensor | None,
        targets: Tensor,
        tokens: dict[str, Tensor],
        opts: dict[str, Any],
        temperature: float,
        config: FusedLossConfig,
        grad_enabled: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        need_x, need_w = grad_enabled and ctx.needs_input_grad[0], grad_enabled and ctx.needs_input_grad[1]
        stats, logp, ent, grad_x, grad_w = _compute(
            hidden, weight, index, targets, tokens, opts, temperature, need_x, need_w, config
        )
        loss = stats[0] - opts["entropy_coef"] * stats[8]
        if tokens["ref"] is not None:
            loss = loss + opts["kl_coef"] * stats[1]
        ctx.grads = (grad_x, grad_w)  # not saved tensors: released as soon as the backward returns them
        ctx.mark_non_differentiable(stats, logp, ent)
        return loss, stats, logp, ent

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_loss: Tensor, *_: Any) -> tuple[Any, ...]:
        return hand_over(ctx, grad_loss, "fused linear pg loss") + (None,) * 7


@_compile.disable
def fused_linear_pg_loss(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    batch: TrainBatch,
    *,
    temperature: float = 1.0,
    config: FusedLossConfig | None = None,
    **opts: Any,
) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
    """The ``clipped_pg`` loss straight from hidden states, never holding more than a chunk of logits.

    Args:
        hidden: ``[B, T, H]`` (or ``[B*T, H]``) hidden states predicting each completion token.
        weight: ``[V, H]`` output-layer weight.
        targets: ``[B, T]`` (or ``[B*T]``) sampled token ids in ``[0, V)``.
        batch: Supplies ``mask``, ``advantages``, ``old_logprobs``, ``ref_logprobs`` and the global counts.
        temperature: Divides the logits, exactly once (match the sampler).
        config: Chunking and tiles (:class:`FusedLossConfig`; a CPU default under the interpreter).
        **opts: ``eps_low``, ``eps_high``, ``dual_clip_c``, ``delta``, ``logratio_clamp``, ``kl_coef``,
            ``kl_estimator``, ``kl_input_clamp``, ``kl_output_clamp``, ``agg`` and ``entropy_coef`` (all
            required; see ``rlsdk_plugins.policy_gradient.ClippedPG``).

    Returns:
        ``(loss, sums, logprobs [B, T], entropy [B, T])``: the differentiable scalar, the detached token
        sums ``pg_loss``, ``kl``, ``clip_frac``, ``ratio_mean``, ``dual_clip_frac``, ``entropy`` and
        ``tokens`` (each ``sum m * value``), and the detached per-token log-probs and entropies.
    """
    shape = tuple(batch.mask.shape)
    x2 = hidden.reshape(-1, hidden.shape[-1])
    y1 = targets.reshape(-1)
    if x2.shape[0] != batch.mask.numel() or y1.shape[0] != batch.mask.numel():
        raise ValueError(
            f"fused linear pg loss: hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} must hold "
            f"one row per token of mask {shape} ({batch.mask.numel()} tokens)"
        )
    check_logprob_inputs(x2, weight, y1, temperature, backend="fused linear pg loss")
    if config is None:
        config = FusedLossConfig() if hidden.is_cuda else CPU_CONFIG
    acc = compute_dtype(hidden, weight)
    mask = batch.mask.reshape(-1).contiguous()
    scale = aggregation_weights(batch.mask, batch, opts["agg"], acc)
    tokens = {
        "mask": mask,
        "w": (batch.mask.to(acc) * scale[:, None]).reshape(-1).contiguous(),
        "old": batch.old_logprobs.detach().reshape(-1).contiguous(),
        "adv": batch.advantages.detach().reshape(-1).contiguous(),
        "ref": None if batch.ref_logprobs is None else batch.ref_logprobs.detach().reshape(-1).contiguous(),
    }
    like = {"dtype": acc, "device": hidden.device}
    index = (mask > 0).nonzero().squeeze(1)  # the trained tokens; only they reach the GEMMs and the kernel
    if index.numel() == 0:
        zero = (x2[:0].sum() + weight[:0].sum()) * 0
        sums = {k: torch.zeros((), **like) for k in STAT_NAMES[2:] if k != "w_ent"}
        return zero.to(acc), sums, torch.zeros(shape, **like), torch.zeros(shape, **like)
    if index.numel() == mask.numel():
        index = None
    else:
        tokens = {k: None if v is None else v[index] for k, v in tokens.items()}
        y1 = y1[index]
    loss, stats, logp, ent = _LinearPGFunction.apply(  # forward() runs without grad mode: tell it the caller's
        x2, weight, index, y1.contiguous(), tokens, opts, float(temperature), config, torch.is_grad_enabled()
    )
    if index is not None:  # 0 at the tokens left out
        logp, ent = (torch.zeros(mask.numel(), **like).index_copy_(0, index, v) for v in (logp, ent))
    sums = {k: v for k, v in zip(STAT_NAMES, stats) if k not in ("w_loss", "w_kl", "w_ent")}
    return loss, sums, logp.view(shape), ent.view(shape)
