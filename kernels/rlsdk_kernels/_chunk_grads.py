"""What the fused ops that form gradients in the forward share: the per-chunk ``dX``/``dW`` GEMMs
and the backward that hands the gradients over."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from rlsdk_kernels._gemm import add_mm


def add_chunk_grads(
    dz: Tensor,
    x_c: Tensor,
    w: Tensor,
    grad_x: Tensor | None,
    at: slice | Tensor,
    grad_w: Tensor | None,
    need_w: bool,
    accum: torch.dtype,
) -> Tensor | None:
    """``grad_x[at] = dz W`` (exact for the chunk) and ``grad_w += dz^T x_c`` in ``accum``; returns ``grad_w``.

    Args:
        dz: ``[c, V]`` gradient of the chunk's logits, in the GEMM dtype.
        x_c: ``[c, H]`` the chunk's hidden states, in the GEMM dtype.
        w: ``[V, H]`` the weight, in the GEMM dtype.
        grad_x: ``dX`` to write the chunk's rows of, or None.
        at: Those rows: a slice, or an index tensor of ``c`` rows (the chunk's trained tokens).
        grad_w: ``dW`` so far (None before the first chunk).
        need_w: Whether ``dW`` is wanted.
        accum: The dtype ``dW`` accumulates in across chunks.
    """
    if grad_x is not None and isinstance(at, slice) and grad_x.dtype == dz.dtype:
        torch.mm(dz, w, out=grad_x[at])
    elif grad_x is not None:
        grad_x[at] = torch.mm(dz, w).to(grad_x.dtype)
    return add_mm(grad_w, dz.T, x_c, accum) if need_w else grad_w


def hand_over(ctx: FunctionCtx, grad_loss: Tensor, op: str) -> tuple[Tensor | None, Tensor | None]:
    """``ctx.grads`` (``dX``, ``dW``, each None or a tensor) scaled in place by ``grad_loss``, once.

    The tensors are handed over, not copied, so a second backward through the same forward
    (``retain_graph=True``) is refused with an error naming ``op``.
    """
    if ctx.grads is None:
        raise RuntimeError(
            f"{op}: backward ran twice through one forward; its gradients are formed in the forward and "
            "handed over (not copied) by the first backward, so retain_graph=True is not supported"
        )
    grad_x, grad_w = ctx.grads
    ctx.grads = None
    if not bool(grad_loss == 1):
        grad_x = grad_x.mul_(grad_loss.to(grad_x.dtype)) if grad_x is not None else None
        grad_w = grad_w.mul_(grad_loss.to(grad_w.dtype)) if grad_w is not None else None
    return grad_x, grad_w
