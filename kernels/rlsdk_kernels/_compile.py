"""``torch.compiler.disable``, applied on the first call instead of at import.

``torch.compiler.disable`` imports ``torch._dynamo`` (and with it sympy and, where it is installed,
triton): about 2 s on a CPU, more than ``import torch`` itself. Used as a plain decorator it would run
when rlsdk loads the kernels plugin, that is at every ``rlsdk`` start-up, GPU or not. :func:`disable`
defers it: the decorated function is an ordinary wrapper until its first call, which builds
``torch.compiler.disable(fn)`` once and calls that from then on. The public behaviour is the one of the
plain decorator: under ``torch.compile`` the call is a graph break and the function runs eagerly (the
kernel tests check the compiled step's values and gradients against eager ones, with the first call
eager and, in a fresh process, compiled). ``functools.wraps`` keeps the name, the docstring and, through
``__wrapped__``, the signature (``inspect.signature``, Sphinx).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["disable"]


def disable(fn: F) -> F:
    """``torch.compiler.disable(fn)``, built on the first call (so importing ``fn``'s module is cheap)."""
    disabled: Callable[..., Any] | None = None

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal disabled
        if disabled is None:
            import torch

            disabled = torch.compiler.disable(fn)
        return disabled(*args, **kwargs)

    return call  # type: ignore[return-value]
