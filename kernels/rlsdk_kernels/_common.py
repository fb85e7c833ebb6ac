"""What every kernel module shares: where the kernels run, dtypes, and option checks.

A leaf module (it imports torch and rlsdk's errors, never another module of ``rlsdk_kernels``, nor
triton at import): the op modules import their shared helpers from here, so none of them imports
another one's private names.

- Where the kernels run: ``MIN_TRITON``, ``triton_problem``, :func:`triton_available`,
  :func:`interpreting` and :func:`supports` (CUDA with triton, or the CPU under ``TRITON_INTERPRET=1``).
  ``rlsdk_kernels.linear_logprob`` re-exports the first three, their documented home.
- dtypes: :func:`compute_dtype` (fp32, fp64 for fp64 inputs) and :func:`tl_dtype` (its Triton type).
- Option checks: :data:`GRAD_ACCUM`, :func:`check_power_of_two` and :func:`check_optional_int`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
from typing import Any

import torch

from rlsdk import ConfigError

__all__ = [
    "GRAD_ACCUM",
    "MIN_TRITON",
    "check_optional_int",
    "check_power_of_two",
    "compute_dtype",
    "interpreting",
    "supports",
    "tl_dtype",
    "triton_available",
    "triton_problem",
]

#: The oldest triton release these kernels run with. 3.4 fails their float64 tests under
#: ``TRITON_INTERPRET=1`` and 3.0 cannot build them at all; torch 2.9 is the first to bring a 3.5.
MIN_TRITON = (3, 5)
#: How ``dW`` may accumulate across token chunks: in the weight's dtype, or in fp32.
GRAD_ACCUM = ("weight", "float32")


def triton_problem() -> str | None:
    """Why triton cannot run these kernels here (not installed, or older than ``MIN_TRITON``),
    or None when it can. Reads the package metadata only: triton is not imported."""
    try:
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed"
    except (ValueError, ImportError):
        return "triton is not installed"
    try:
        version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return None  # a build without metadata (e.g. pytorch-triton): nothing to check
    release = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if release < MIN_TRITON:
        oldest = ".".join(map(str, MIN_TRITON))
        return (
            f"triton {version} is installed, older than {oldest}, the oldest these kernels run with "
            "(torch >= 2.9 brings one)"
        )
    return None


def triton_available() -> bool:
    """True when a triton that runs these kernels is installed (see ``triton_problem``)."""
    return triton_problem() is None


def interpreting() -> bool:
    """True when ``TRITON_INTERPRET=1`` is set (kernels run on CPU tensors, sequentially, in numpy)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def supports(device: torch.device | str) -> bool:
    """True where the kernels run: CUDA with triton, or the CPU with triton under ``TRITON_INTERPRET=1``.

    Args:
        device: The device of the inputs.
    """
    kind = torch.device(device).type
    if not triton_available():
        return False
    if kind == "cuda":
        return True
    return kind == "cpu" and interpreting()


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 when any input is float64, else float32 (the dtype the kernels accumulate in)."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def tl_dtype(dtype: torch.dtype) -> Any:
    """The Triton type of a compute dtype (``tl.float64`` for float64, else ``tl.float32``; imports triton)."""
    import triton.language as tl

    return tl.float64 if dtype == torch.float64 else tl.float32


def _power_of_two(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0 and value & (value - 1) == 0


def check_power_of_two(value: Any, option: str, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is a power of two in ``[low, high]``; else a :class:`rlsdk.ConfigError`
    naming ``option`` (a tile size or a warp count)."""
    if not _power_of_two(value) or value < low or (high is not None and value > high):
        bound = f" <= {high}" if high is not None else ""
        raise ConfigError(f"{option} must be a power of two >= {low}{bound}, got {value!r}")
    return value


def check_optional_int(value: Any, option: str, none_means: str) -> int | None:
    """Return ``value`` if it is None or an integer >= 1; else a :class:`rlsdk.ConfigError` naming
    ``option`` and what None means for it."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{option} must be {none_means} or an integer >= 1, got {value!r}")
    return value
