"""Any rlsdk loss straight from hidden states, gradients formed in the forward (6THV).

A leaf op: the ``triton`` logprob backend (``rlsdk_kernels.plugin``) runs it for every loss its
strategy table has no fused kernel for, with its ``fuse_loss_mib``, ``fuse_loss_tokens`` and
``grad_accum`` options.

rlsdk losses add up over rows: a loss of a micro-batch is normalised by the global batch's counts,
so the losses of the micro-batches sum to the loss of the whole batch, and so do their gradients
and metrics (:class:`rlsdk.LossOutput`; ``rlsdk.testing.check_loss`` checks it for every loss). So
the rows of a micro-batch can be taken in chunks of whole sequences, and the loss of each chunk
differentiated while its logits are at hand::

    for each chunk c of whole rows (the logits of its trained tokens, [n_c, V], fit ``chunk_mib``):
        X_c             = the hidden states of the chunk's trained tokens (mask > 0)
        Z_c             = X_c W^T                       one cuBLAS GEMM, in the input dtype
        logp_c, Ent_c   = reduce(Z_c)                   Triton, as the ``triton`` backend's forward
        out_c           = loss(logp_c, batch_c)         the loss's own PyTorch code, on [rows_c, T]
        g_lp, g_ent     = d out_c.loss / d(logp_c, Ent_c)   autograd, on the small leaves
        Z_c            <- dz(Z_c; g_lp, g_ent)           Triton, in place (the backend's dz kernel)
        dX_c            = Z_c W;   dW += Z_c^T X_c        two GEMMs

``batch_c`` is ``batch.select(rows of c)`` (it keeps the global counts); ``Ent_c`` is given to the
loss as ``batch_c.entropy`` when it ``needs_entropy``. The loss is ``sum_c out_c.loss`` and each
metric the sum over chunks, as the trainer sums them over micro-batches. Each logit is computed once
(2THV) and its gradient formed at once (4THV): 6THV, against 8THV for the backend followed by the
loss, whose backward must recompute the logits. Memory: one chunk of logits plus ``O(N)``.

Only trained tokens reach the GEMMs and kernels, so padding costs nothing (``T`` above counts trained
tokens). Where some token is untrained, each
chunk's hidden states are gathered (an ``[n_c, H]`` copy) and its ``dX`` rows scattered back; the loss
sees log-prob and entropy 0 at untrained tokens, and their gradient rows are 0 whatever their logits.
Chunks are filled greedily with whole rows, so sequence-level losses (a sequence-level ratio, say)
are exact; a row whose trained tokens' logits alone exceed ``chunk_mib`` (or whose trained tokens
exceed ``chunk_tokens``) makes :func:`fused_linear_loss` return None (the caller then uses the
backend and the loss). Planning the
chunks reads the mask from the device, once per call. ``dW`` accumulates
across chunks in the weight's dtype (``grad_accum="weight"``) or in fp32 (``"float32"``), as in
:mod:`rlsdk_kernels.linear_pg_loss`. The backward only scales the gradients formed in the forward;
under ``no_grad`` none are formed.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from rlsdk import LossOutput, TrainBatch
from rlsdk.validation import check_logprob_inputs
from rlsdk_kernels import _compile
from rlsdk_kernels._chunk_grads import add_chunk_grads, hand_over
from rlsdk_kernels._common import compute_dtype
from rlsdk_kernels._gemm import gemm_operands
from rlsdk_kernels.linear_logprob import KernelConfig, logits_to_grad, reduce_rows

__all__ = ["fused_linear_loss", "row_chunks", "token_budget"]

#: The ``ignore_index`` given to the kernels (every token they see is a trained one).
_MASKED = -1


def row_chunks(counts: list[int], budget: int) -> list[tuple[int, int]] | None:
    """Consecutive row ranges ``[(r0, r1), ...]`` covering all rows, each holding at most ``budget``
    trained tokens (``counts[r]`` per row), greedily from the first row; None when one row alone
    holds more. Rows without a trained token join any chunk."""
    chunks: list[tuple[int, int]] = []
    first, used = 0, 0
    for row, count in enumerate(counts):
        if count > budget:
            return None
        if used + count > budget:
            chunks.append((first, row))
            first, used = row, 0
        used += count
    return chunks + [(first, len(counts))] if counts else chunks


def token_budget(vocab: int, dtype: torch.dtype, chunk_mib: float) -> int:
    """Tokens whose ``[tokens, V]`` logits in ``dtype`` fit ``chunk_mib``."""
    return int(chunk_mib * 2**20 // (vocab * torch.empty((), dtype=dtype).element_size()))


def _chunk_loss(
    loss: Any, logp: Tensor, ent: Tensor, batch: TrainBatch, need_grad: bool
) -> tuple[LossOutput, Tensor | None, Tensor | None]:
    """``(out, d out.loss / d logp, d out.loss / d Ent or None)`` of one chunk (``logp``, ``ent`` [rows, T]);
    without ``need_grad`` the gradients are None."""
    en = ent if getattr(loss, "needs_entropy", False) else None
    if not need_grad:
        return loss(logp, TrainBatch(**{**vars(batch), "entropy": en})), None, None
    leaves = [t.detach().requires_grad_(True) for t in (logp, en) if t is not None]
    with torch.enable_grad():  # the autograd Function's forward runs without it
        out = loss(leaves[0], TrainBatch(**{**vars(batch), "entropy": leaves[1] if en is not None else None}))
        unused = not out.loss.requires_grad  # e.g. every token of the chunk masked
        grads = [None] * len(leaves) if unused else torch.autograd.grad(out.loss, leaves, allow_unused=True)
    g_lp = grads[0] if grads[0] is not None else torch.zeros_like(logp)
    return out, g_lp, (grads[1] if len(grads) > 1 else None)


@dataclass(frozen=True)
class _Plan:
    """Which tokens the kernels see and in which chunks.

    Attributes:
        index: ``[n]`` flat positions of the trained tokens (``mask > 0``) in the batch, or None when
            every token is trained (then the position of token ``i`` is ``i``).
        offsets: ``offsets[r]`` trained tokens lie in rows before ``r`` (``B + 1`` numbers).
        chunks: Row ranges ``(r0, r1)``; the chunk's tokens are ``offsets[r0]:offsets[r1]`` of ``index``.
    """

    index: Tensor | None
    offsets: list[int]
    chunks: list[tuple[int, int]]


class _LinearLossFunction(torch.autograd.Function):
    """``(loss, logp, Ent) = f(hidden, weight)``; the metrics travel in ``holder``."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        hidden: Tensor,
        weight: Tensor,
        targets: Tensor,
        batch: TrainBatch,
        loss: Any,
        temperature: float,
        plan: _Plan,
        config: KernelConfig,
        grad_accum: str,
        grad_enabled: bool,
        holder: dict,
    ) -> tuple[Tensor, Tensor, Tensor]:
        need_x, need_w = grad_enabled and ctx.needs_input_grad[0], grad_enabled and ctx.needs_input_grad[1]
        need = need_x or need_w
        shape, idx = batch.mask.shape, plan.index
        x, w = gemm_operands(hidden, weight)
        acc = compute_dtype(hidden, weight)
        widest = max(plan.offsets[r1] - plan.offsets[r0] for r0, r1 in plan.chunks)
        buf = torch.empty(widest, weight.shape[0], dtype=x.dtype, device=hidden.device)
        # 0 at untrained tokens, which no kernel sees when some are left out (idx given).
        new = torch.zeros if idx is not None else torch.empty
        logp, ent = (new(shape.numel(), dtype=acc, device=hidden.device) for _ in range(2))
        grad_x = new(hidden.shape, dtype=hidden.dtype, device=hidden.device) if need_x else None
        grad_w: Tensor | None = None
        total = torch.zeros((), dtype=acc, device=hidden.device)
        metrics: dict[str, float | Tensor] = {}
        for r0, r1 in plan.chunks:
            t0, t1 = plan.offsets[r0], plan.offsets[r1]  # the chunk's trained tokens, in idx
            at = slice(t0, t1) if idx is None else idx[t0:t1]  # ... and where they stand in the batch
            x_c = x[at] if t1 > t0 else None  # a gathered copy when idx is given
            if x_c is not None:
                z = torch.mm(x_c, w.T, out=buf[: t1 - t0])
                lp_c, ent_c, lse, raw_ent = reduce_rows(x_c, w, z, targets[at], temperature, True, _MASKED, config)
                logp[at], ent[at] = lp_c, ent_c
            rows = slice(r0 * shape[1], r1 * shape[1])
            out, g_lp, g_ent = _chunk_loss(
                loss, logp[rows].view(r1 - r0, -1), ent[rows].view(r1 - r0, -1), batch.select(slice(r0, r1)), need
            )
            total = total + out.loss.detach().to(acc)
            for key, value in out.metrics.items():  # tensors stay on the device: no wait for the GPU here
                metrics[key] = metrics.get(key, 0.0) + (value.detach() if isinstance(value, Tensor) else value)
            if x_c is None or not need:
                continue
            local = slice(None) if idx is None else idx[t0:t1] - rows.start  # trained tokens within the rows
            logits_to_grad(
                x_c,
                w,
                z,
                0,
                targets[at],
                lse,
                raw_ent,
                g_lp.reshape(-1)[local].to(acc),
                None if g_ent is None else g_ent.reshape(-1)[local].to(acc),
                temperature,
                _MASKED,
                config,
                True,
            )
            grad_w = add_chunk_grads(z, x_c, w, grad_x, at, grad_w, need_w, acc if grad_accum == "float32" else x.dtype)
        if grad_w is not None and grad_w.dtype != weight.dtype:
            grad_w = grad_w.to(weight.dtype)
        holder["metrics"] = metrics
        ctx.grads = (grad_x, grad_w)  # not saved tensors: released as soon as the backward returns them
        ctx.mark_non_differentiable(logp, ent)
        return total, logp.view(shape), ent.view(shape)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_loss: Tensor, *_: Any) -> tuple[Any, ...]:
        return hand_over(ctx, grad_loss, "fused linear loss") + (None,) * 9


@_compile.disable
def fused_linear_loss(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    batch: TrainBatch,
    loss: Any,
    *,
    temperature: float = 1.0,
    config: KernelConfig,
    chunk_mib: float = 384.0,
    chunk_tokens: int | None = None,
    grad_accum: str = "weight",
) -> tuple[LossOutput, Tensor, Tensor] | None:
    """``loss`` of the micro-batch straight from hidden states (see the module docstring), or None
    where one row's trained tokens alone exceed the chunk budget.

    Args:
        hidden: ``[B * T, H]`` hidden states predicting each completion token.
        weight: ``[V, H]`` output-layer weight.
        targets: ``[B * T]`` sampled token ids in ``[0, V)``.
        batch: The micro-batch (``[B, T]`` fields, the global batch's counts).
        loss: Any rlsdk loss: ``loss(logprobs [B, T], batch) -> LossOutput``, additive over rows.
        temperature: Divides the logits, exactly once (match the sampler).
        config: Reduction tiles and warps of the Triton kernels (``KernelConfig``; its ``matmul`` and
            buffer budgets are not used: the logits always come from cuBLAS here).
        chunk_mib: Memory budget of one chunk's logits, in MiB.
        chunk_tokens: Trained tokens per chunk at most, instead of as many as fit ``chunk_mib``
            (None: from ``chunk_mib``).
        grad_accum: ``"weight"`` (``dW`` accumulated across chunks in the weight's dtype) or
            ``"float32"``.

    Returns:
        ``(LossOutput, logprobs [B, T], entropy [B, T])`` (log-probs and entropies detached, 0 at masked
        tokens), or None.
    """
    shape = tuple(batch.mask.shape)
    if hidden.shape[0] != batch.mask.numel() or targets.numel() != batch.mask.numel():
        raise ValueError(
            f"fused linear loss: hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} must hold one "
            f"row per token of mask {shape} ({batch.mask.numel()} tokens)"
        )
    check_logprob_inputs(hidden, weight, targets, temperature, backend="fused linear loss")
    if hidden.shape[0] == 0:
        return None
    trained = (batch.mask > 0).cpu()  # the mask, read from the device once to plan the chunks
    counts = trained.sum(-1).tolist()  # trained tokens per row
    budget = chunk_tokens or token_budget(weight.shape[0], torch.promote_types(hidden.dtype, weight.dtype), chunk_mib)
    chunks = row_chunks(counts, budget)
    if chunks is None:
        return None
    offsets = list(accumulate(counts, initial=0))
    index = None if offsets[-1] == trained.numel() else trained.reshape(-1).nonzero().squeeze(1).to(hidden.device)
    plan = _Plan(index=index, offsets=offsets, chunks=chunks)
    holder: dict = {}
    total, logp, ent = _LinearLossFunction.apply(  # forward() runs without grad mode: tell it the caller's
        hidden,
        weight,
        targets.contiguous(),
        batch,
        loss,
        float(temperature),
        plan,
        config,
        grad_accum,
        torch.is_grad_enabled(),
        holder,
    )
    return LossOutput(loss=total, metrics=holder["metrics"]), logp, ent
