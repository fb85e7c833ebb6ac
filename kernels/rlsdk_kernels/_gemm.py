"""GEMM helpers shared by the kernels' PyTorch (cuBLAS) side."""

from __future__ import annotations

import torch
from torch import Tensor


def gemm_operands(hidden: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """``hidden`` and ``weight`` in one dtype (the promoted one; no copy when they already agree)."""
    dtype = torch.promote_types(hidden.dtype, weight.dtype)
    return hidden.to(dtype), weight.to(dtype)


def add_mm(acc: Tensor | None, a: Tensor, b: Tensor, dtype: torch.dtype) -> Tensor:
    """``acc + a @ b`` accumulated in ``dtype`` (a new tensor when ``acc`` is None).

    bf16/fp16 operands with an fp32 accumulator use ``addmm(out_dtype=...)`` in place (CUDA,
    torch >= 2.8: fp32 result, no fp32 copy of the operands). Without it, on CUDA the product is
    formed in the operands' dtype and added (a slow fp32 GEMM would cost far more than that
    rounding); on the CPU the operands are upcast (exact).
    """
    if a.dtype == dtype:
        return torch.mm(a, b) if acc is None else acc.addmm_(a, b)
    if acc is None:
        acc = torch.zeros(a.shape[0], b.shape[1], dtype=dtype, device=a.device)
    if not a.is_cuda:
        return acc.addmm_(a.to(dtype), b.to(dtype))
    try:
        return torch.addmm(acc, a, b, dtype, out=acc)
    except (TypeError, RuntimeError):
        return acc.add_(torch.mm(a, b))
