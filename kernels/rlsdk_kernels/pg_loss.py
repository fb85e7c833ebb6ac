"""Fused clipped policy-gradient loss: one Triton pass gives the loss, its gradient and the metrics.

A leaf op: :func:`fused_pg_loss` computes the ``clipped_pg`` loss of
``rlsdk_plugins.policy_gradient.ClippedPG`` (without the entropy bonus) from log-probabilities, every
per-token term, the aggregation and the gradient in one kernel launch instead of a dozen elementwise
PyTorch ops and their autograd graph. The loss component that calls it, ``fused_clipped_pg``, is
:class:`rlsdk_kernels.plugin.FusedClippedPG`; :func:`token_terms` and :func:`term_options` are shared
with :mod:`rlsdk_kernels.linear_pg_loss`.

Per valid token (``m > 0``; ``lp``, ``lp_old``, ``lp_ref`` and ``A`` are replaced by 0 where ``m = 0``
*before* any arithmetic, so NaN/inf there never reach ``exp``; kernels.md section 3, "NaN from masking
order")::

    l   = clamp(lp - lp_old, -lr_clamp, lr_clamp)          rho = exp(l)
    u   = -A * min(rho, delta)                              c   = -A * clip(rho, 1 - eps_low, 1 + eps_high)
    L   = max(u, c);   L = -C * A  where A < 0 and L > -C * A  (dual clip, Ye et al. 2020)
    x   = clamp(lp - lp_ref, -in_clamp, in_clamp)           KL  = clamp(k(x), -out_clamp, out_clamp)
    k1 = x,  abs = |x|,  k2 = x^2 / 2,  k3 = exp(-x) + x - 1  (its Taylor polynomial where |x| < 0.125)

and ``loss = agg(L) + kl_coef * agg(KL) - entropy_coef * agg(H)`` with the aggregation weights of
``rlsdk.aggregate`` (``rlsdk.functional.aggregation_weights``, the one table of the modes):
``agg(V) = sum_{b,t} w_{b,t} V_{b,t}``, ``w_{b,t} = m_{b,t} * s_b`` where ``s_b`` is
``1 / N_tok`` (token-mean), ``1 / (max(|y_b|, 1) N_seq)`` (seq-mean-token-mean), ``1 / N_seq``
(seq-mean-token-sum) or ``1 / (N_rows C)`` (seq-mean-token-sum-norm), all with the batch's *global*
counts. The loss is linear in the per-token terms, so the forward also writes::

    dloss/dlp = w * (dL/drho * rho * [|l| <= lr_clamp] + kl_coef * dKL/dx * [|x| <= in_clamp])

(``dL/drho`` follows PyTorch's subgradients: ``max`` splits a tie in halves, ``clamp`` passes the
gradient at its bounds, ``dKL/dx`` is 0 where the output clamp is active; the ``+`` estimators use the
gradient of ``k2``) and the backward only scales it by ``grad_output``. The entropy bonus acts on
``batch.entropy`` (a tensor from the logprob backend) and is added with PyTorch, exactly as ``clipped_pg``.

Where this kernel cannot run (:func:`supports`: no CUDA and no ``TRITON_INTERPRET=1``, or triton
missing), ``FusedClippedPG`` falls back to ``clipped_pg`` itself, so the results are the same everywhere.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from rlsdk import TrainBatch
from rlsdk.functional import aggregation_weights
from rlsdk_kernels import _compile
from rlsdk_kernels._buffers import empty
from rlsdk_kernels._common import supports, tl_dtype, triton_available

__all__ = [
    "KL_KINDS", "NUM_STATS", "fused_pg_loss", "supports", "term_options", "token_terms", "triton_available",
    "triton_kernel",
]  # fmt: skip

#: Base KL estimator -> the integer the kernel switches on.
KL_KINDS = {"k1": 0, "abs": 1, "k2": 2, "k3": 3}
#: Number of per-program statistics (agg(L), agg(KL), sums of m*L, m*KL, m*clip, m*rho, m*dual, m).
NUM_STATS = 8
#: Tokens per program (a power of two).
BLOCK_T = 1024
_INTERPRET_BLOCK_T = 16


@functools.lru_cache(maxsize=1)
def token_terms() -> Any:
    """The per-token maths of the module docstring as Triton device functions (built on first use).

    Returns ``(pg_token_terms, store_pg_stats)``. ``pg_token_terms(lp, old, ref, adv, valid, param_ptr,
    ...)`` takes ``[BLOCK]`` vectors already zeroed where ``valid`` is false and returns
    ``(L, KL, dL_total/dlp, clip, rho, dual)``, where ``dL_total/dlp`` is the unweighted gradient of
    ``L + kl_coef * KL``; ``store_pg_stats`` writes the :data:`NUM_STATS` per-program sums. Kernels
    that call them bind them in their module globals (the interpreter resolves helpers there, not in
    closures).
    """
    import triton
    import triton.language as tl

    globals()["tl"] = tl  # the interpreter looks for triton.language in a helper's module globals

    @triton.jit
    def pg_token_terms(
        lp,
        old,
        ref,
        adv,
        valid,
        param_ptr,  # [8] in the compute dtype: lo, hi, -c, delta, lr_clamp, kl_coef, in_clamp, out_clamp
        HAS_REF: tl.constexpr,
        USE_KL: tl.constexpr,
        KL_KIND: tl.constexpr,
        KL_STRAIGHT: tl.constexpr,
        HAS_DUAL: tl.constexpr,
        HAS_DELTA: tl.constexpr,
        HAS_LR_CLAMP: tl.constexpr,
        HAS_IN_CLAMP: tl.constexpr,
        HAS_OUT_CLAMP: tl.constexpr,
    ):
        lo = tl.load(param_ptr + 0)
        hi = tl.load(param_ptr + 1)
        neg_c = tl.load(param_ptr + 2)
        delta = tl.load(param_ptr + 3)
        lr_clamp = tl.load(param_ptr + 4)
        kl_coef = tl.load(param_ptr + 5)
        in_clamp = tl.load(param_ptr + 6)
        out_clamp = tl.load(param_ptr + 7)
        zero = lp * 0.0
        one = zero + 1.0

        # Clipped surrogate.
        logratio = lp - old
        pass_lr = one
        if HAS_LR_CLAMP:
            pass_lr = tl.where((logratio >= -lr_clamp) & (logratio <= lr_clamp), one, zero)
            logratio = tl.minimum(tl.maximum(logratio, -lr_clamp), lr_clamp)
        ratio = tl.exp(logratio)
        u_ratio = ratio
        d_u = one
        if HAS_DELTA:
            d_u = tl.where(ratio <= delta, one, zero)
            u_ratio = tl.minimum(ratio, delta)
        d_c = tl.where((ratio >= lo) & (ratio <= hi), one, zero)
        c_ratio = tl.minimum(tl.maximum(ratio, lo), hi)
        unclipped = -adv * u_ratio
        clipped = -adv * c_ratio
        g_u = -adv * d_u
        g_c = -adv * d_c
        # torch.maximum's subgradient: the larger branch, half of each on a tie.
        d_ratio = tl.where(unclipped > clipped, g_u, tl.where(unclipped < clipped, g_c, 0.5 * (g_u + g_c)))
        loss = tl.maximum(unclipped, clipped)
        clip_flag = tl.where(clipped > unclipped, one, zero)
        dual_flag = zero
        if HAS_DUAL:
            floor = neg_c * adv
            dual = (adv < 0) & (loss > floor)
            loss = tl.where(dual, floor, loss)
            d_ratio = tl.where(dual, zero, d_ratio)
            dual_flag = tl.where(dual, one, zero)
        grad = d_ratio * ratio * pass_lr

        # KL to the reference policy.
        kl = zero
        if HAS_REF:
            x = lp - ref
            pass_x = one
            if HAS_IN_CLAMP:
                pass_x = tl.where((x >= -in_clamp) & (x <= in_clamp), one, zero)
                x = tl.minimum(tl.maximum(x, -in_clamp), in_clamp)
            if KL_KIND == 0:
                kl = x
                d_kl = one
            elif KL_KIND == 1:
                kl = tl.abs(x)
                d_kl = tl.where(x > 0, one, tl.where(x < 0, -one, zero))
            elif KL_KIND == 2:
                kl = 0.5 * x * x
                d_kl = x
            else:
                # exp(-x) + x - 1 cancels near 0 (fp32: about -6e-8 where the value is x^2/2): the
                # Taylor series to x^10 there keeps the digits and the sign (truncation < 1e-15
                # relative). Only small integers appear, which are exact in any dtype.
                e = tl.exp(-x)
                small = tl.abs(x) < 0.125
                s = 1.0 - x / 9.0 * (1.0 - x / 10.0)
                s = 1.0 - x / 6.0 * (1.0 - x / 7.0 * (1.0 - x / 8.0 * s))
                poly = x * x / 2.0 * (1.0 - x / 3.0 * (1.0 - x / 4.0 * (1.0 - x / 5.0 * s)))
                r = 1.0 - x / 6.0 * (1.0 - x / 7.0 * (1.0 - x / 8.0 * (1.0 - x / 9.0)))
                d_poly = x * (1.0 - x / 2.0 * (1.0 - x / 3.0 * (1.0 - x / 4.0 * (1.0 - x / 5.0 * r))))
                kl = tl.where(small, poly, e + x - 1.0)
                d_kl = tl.where(small, d_poly, 1.0 - e)
            if HAS_OUT_CLAMP:
                d_kl = tl.where((kl >= -out_clamp) & (kl <= out_clamp), d_kl, zero)
                kl = tl.minimum(tl.maximum(kl, -out_clamp), out_clamp)
            if KL_STRAIGHT:
                d_kl = x  # value of the estimator, gradient of k2
            if USE_KL:
                grad = grad + kl_coef * (d_kl * pass_x)
        return loss, kl, grad, clip_flag, ratio, dual_flag

    @triton.jit
    def store_pg_stats(base, valid, m, w, loss, kl, clip_flag, ratio, dual_flag):
        """Store the 8 per-program sums at ``base``: w*L, w*KL, m*L, m*KL, m*clip, m*rho, m*dual, m."""
        zero = m * 0.0
        mv = tl.where(valid, m, zero)
        tl.store(base + 0, tl.sum(tl.where(valid, w * loss, zero), axis=0))
        tl.store(base + 1, tl.sum(tl.where(valid, w * kl, zero), axis=0))
        tl.store(base + 2, tl.sum(tl.where(valid, mv * loss, zero), axis=0))
        tl.store(base + 3, tl.sum(tl.where(valid, mv * kl, zero), axis=0))
        tl.store(base + 4, tl.sum(mv * clip_flag, axis=0))
        tl.store(base + 5, tl.sum(tl.where(valid, mv * ratio, zero), axis=0))
        tl.store(base + 6, tl.sum(mv * dual_flag, axis=0))
        tl.store(base + 7, tl.sum(mv, axis=0))

    return pg_token_terms, store_pg_stats


@functools.lru_cache(maxsize=1)
def triton_kernel() -> Any:
    """Build the Triton kernel on first use (so importing this module never imports triton)."""
    import triton
    import triton.language as tl

    pg_token_terms, store_pg_stats = token_terms()
    # The interpreter resolves helpers in the module globals, not in closures.
    globals().update(pg_token_terms=pg_token_terms, store_pg_stats=store_pg_stats)

    @triton.jit
    def pg_loss_fwd_kernel(
        lp_ptr,
        old_ptr,
        ref_ptr,
        adv_ptr,
        mask_ptr,
        scale_ptr,  # inputs [B, T] and row scale [B]
        param_ptr,  # [8]: see pg_token_terms
        grad_ptr,
        stats_ptr,  # outputs: dloss/dlp [B, T], stats [B * n_blocks, NSTAT]
        T,
        n_blocks,
        HAS_REF: tl.constexpr,
        USE_KL: tl.constexpr,
        KL_KIND: tl.constexpr,
        KL_STRAIGHT: tl.constexpr,
        HAS_DUAL: tl.constexpr,
        HAS_DELTA: tl.constexpr,
        HAS_LR_CLAMP: tl.constexpr,
        HAS_IN_CLAMP: tl.constexpr,
        HAS_OUT_CLAMP: tl.constexpr,
        COMPUTE: tl.constexpr,
        NSTAT: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        row = tl.program_id(0)
        blk = tl.program_id(1)
        cols = blk * BLOCK + tl.arange(0, BLOCK)
        inb = cols < T
        offs = row.to(tl.int64) * T + cols
        m = tl.load(mask_ptr + offs, mask=inb, other=0).to(COMPUTE)
        valid = m > 0
        zero = tl.zeros([BLOCK], dtype=COMPUTE)
        # Mask first: torch.where semantics, so NaN/inf at masked positions never reach exp.
        lp = tl.where(valid, tl.load(lp_ptr + offs, mask=inb, other=0).to(COMPUTE), zero)
        old = tl.where(valid, tl.load(old_ptr + offs, mask=inb, other=0).to(COMPUTE), zero)
        adv = tl.where(valid, tl.load(adv_ptr + offs, mask=inb, other=0).to(COMPUTE), zero)
        ref = zero
        if HAS_REF:
            ref = tl.where(valid, tl.load(ref_ptr + offs, mask=inb, other=0).to(COMPUTE), zero)
        w = m * tl.load(scale_ptr + row).to(COMPUTE)
        loss, kl, grad, clip_flag, ratio, dual_flag = pg_token_terms(
            lp,
            old,
            ref,
            adv,
            valid,
            param_ptr,
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
        grad = tl.where(valid, w * grad, zero)
        tl.store(grad_ptr + offs, grad, mask=inb)

        # Per-program partial sums (reduced by the host in a fixed order: deterministic, no atomics).
        base = stats_ptr + (row.to(tl.int64) * n_blocks + blk) * NSTAT
        store_pg_stats(base, valid, m, w, loss, kl, clip_flag, ratio, dual_flag)

    return pg_loss_fwd_kernel


def _launch(logprobs: Tensor, batch: TrainBatch, opts: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Run the kernel; return ``(grad [B, T], stats [NSTAT])`` in the compute dtype."""
    import triton

    dtype = torch.float64 if logprobs.dtype == torch.float64 else torch.float32
    lp = logprobs.detach().contiguous()
    mask = batch.mask.contiguous()
    old = batch.old_logprobs.detach().contiguous()
    adv = batch.advantages.detach().contiguous()
    has_ref = batch.ref_logprobs is not None
    ref = batch.ref_logprobs.detach().contiguous() if has_ref else lp
    rows, length = lp.shape
    block = _INTERPRET_BLOCK_T if lp.device.type == "cpu" else min(BLOCK_T, max(16, triton.next_power_of_2(length)))
    n_blocks = max(triton.cdiv(length, block), 1)
    scale = aggregation_weights(mask, batch, opts["agg"], dtype).contiguous()
    params, flags = term_options(opts, has_ref, dtype, lp.device)
    grad = empty(rows, length, dtype=dtype, device=lp.device)
    stats = empty(max(rows * n_blocks, 1), NUM_STATS, dtype=dtype, device=lp.device)
    if rows == 0 or length == 0:
        stats.zero_()
        return grad, stats.sum(0)
    triton_kernel()[(rows, n_blocks)](
        lp,
        old,
        ref,
        adv,
        mask,
        scale,
        params,
        grad,
        stats,
        length,
        n_blocks,
        **flags,
        COMPUTE=tl_dtype(dtype),
        NSTAT=NUM_STATS,
        BLOCK=block,
    )
    return grad, stats.sum(0)


def term_options(opts: dict[str, Any], has_ref: bool, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, dict]:
    """``(param tensor, constexpr flags)`` of :func:`token_terms` for the loss options ``opts``."""
    values = (
        1.0 - opts["eps_low"],
        1.0 + opts["eps_high"],
        -(opts["dual_clip_c"] or 0.0),
        opts["delta"] or 0.0,
        opts["logratio_clamp"] or 0.0,
        opts["kl_coef"],
        opts["kl_input_clamp"] or 0.0,
        opts["kl_output_clamp"] or 0.0,
    )
    estimator: str = opts["kl_estimator"]
    flags = {
        "HAS_REF": has_ref, "USE_KL": has_ref and opts["kl_coef"] > 0,
        "KL_KIND": KL_KINDS[estimator.rstrip("+")], "KL_STRAIGHT": estimator.endswith("+"),
        "HAS_DUAL": opts["dual_clip_c"] is not None, "HAS_DELTA": opts["delta"] is not None,
        "HAS_LR_CLAMP": opts["logratio_clamp"] is not None, "HAS_IN_CLAMP": opts["kl_input_clamp"] is not None,
        "HAS_OUT_CLAMP": opts["kl_output_clamp"] is not None,
    }  # fmt: skip
    return _params(tuple(float(x) for x in values), dtype, device), flags


@functools.lru_cache(maxsize=64)
def _params(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """The kernel's scalars as a (cached, read-only) tensor of the compute dtype.

    A Python float kernel argument would be float32; each value is formed in double first and rounded
    once, as PyTorch rounds the scalar of ``clamp(1 - eps, ...)``.
    """
    return torch.tensor(values, dtype=dtype).to(device)


class _FusedPGFunction(torch.autograd.Function):
    """``(loss, stats) = f(logprobs)``; the gradient is formed in the forward and scaled in the backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, logprobs: Tensor, batch: TrainBatch, opts: dict[str, Any]) -> tuple[Tensor, Tensor]:
        grad, stats = _launch(logprobs, batch, opts)
        loss = stats[0] + opts["kl_coef"] * stats[1] if batch.ref_logprobs is not None else stats[0]
        ctx.save_for_backward(grad)
        ctx.lp_dtype = logprobs.dtype
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_loss: Tensor, _grad_stats: Tensor) -> tuple[Tensor, None, None]:
        (grad,) = ctx.saved_tensors
        return (grad * grad_loss).to(ctx.lp_dtype), None, None


@_compile.disable
def fused_pg_loss(logprobs: Tensor, batch: TrainBatch, **opts: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped surrogate plus KL term, aggregated, in one Triton launch (no entropy bonus).

    Args:
        logprobs: ``[B, T]`` current log-probabilities (float32 or float64; float64 computes in float64).
        batch: Supplies ``mask``, ``advantages``, ``old_logprobs``, ``ref_logprobs`` and the global counts.
        **opts: ``eps_low``, ``eps_high``, ``dual_clip_c``, ``delta``, ``logratio_clamp``, ``kl_coef``,
            ``kl_estimator``, ``kl_input_clamp``, ``kl_output_clamp``, ``agg`` (all required; see
            :class:`rlsdk_kernels.plugin.FusedClippedPG`).

    Returns:
        ``(loss, sums)``: the differentiable scalar ``agg(L) + kl_coef * agg(KL)`` and the token sums
        ``sum m*L``, ``sum m*KL``, ``sum m*clip``, ``sum m*rho``, ``sum m*dual``, ``sum m`` (detached).
    """
    if logprobs.shape != batch.mask.shape:
        raise ValueError(f"fused_pg_loss: logprobs {tuple(logprobs.shape)} must match mask {tuple(batch.mask.shape)}")
    loss, stats = _FusedPGFunction.apply(logprobs, batch, opts)
    names = ("pg_loss", "kl", "clip_frac", "ratio_mean", "dual_clip_frac", "tokens")
    return loss, dict(zip(names, stats[2:]))
