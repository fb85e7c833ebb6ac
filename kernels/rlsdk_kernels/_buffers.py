"""Output buffers of the kernels, optionally poisoned so a test can prove every element was written.

With ``RLSDK_KERNELS_POISON=1`` every buffer a kernel is expected to fill completely starts as NaN
(floating point) or the most negative value (integers) instead of whatever memory held; a GPU test
then checks that no NaN survives (kernels.md section 6: "poison the output first").
"""

from __future__ import annotations

import os

import torch

POISON_ENV = "RLSDK_KERNELS_POISON"


def poisoning() -> bool:
    """True when ``RLSDK_KERNELS_POISON=1``."""
    return os.environ.get(POISON_ENV, "0") == "1"


def empty(*shape: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``torch.empty``, filled with NaN (or the minimum integer) when :func:`poisoning` is on."""
    out = torch.empty(*shape, dtype=dtype, device=device)
    if poisoning():
        out.fill_(float("nan") if out.is_floating_point() else torch.iinfo(dtype).min)
    return out


def rows_within(mib: float, row_elements: int, dtype: torch.dtype, limit: int) -> int:
    """How many rows of ``row_elements`` values of ``dtype`` fit in ``mib`` MiB: a multiple of 128
    when that is at least 128, never more than ``limit`` and never less than 1."""
    per_row = max(row_elements, 1) * torch.empty((), dtype=dtype).element_size()
    fit = int(mib * 2**20) // per_row
    if fit >= 128:
        fit -= fit % 128
    return max(1, min(fit, limit))
