"""The rlsdk plugin of ``rlsdk_kernels`` (entry point ``kernels = "rlsdk_kernels.plugin"``).

Loaded at every rlsdk start-up, so it imports neither triton nor CUDA: the component modules are
imported when the registry is built (they import torch, never triton nor ``torch._dynamo``: their
``torch.compiler.disable`` is built on the first call, see ``rlsdk_kernels._compile``), and triton
only when a kernel first runs. Registering the classes themselves keeps rlsdk's option checking (an
unknown option is a ``ConfigError`` listing the valid ones). ``tests/test_startup.py`` checks this.
"""

from __future__ import annotations

import rlsdk


@rlsdk.hookimpl
def register_logprob_backends(register) -> None:  # noqa: ANN001 - the hook's callback
    """Register the ``triton`` logprob backend (priority 100 where CUDA is available: ``auto`` picks it)."""
    from rlsdk_kernels.linear_logprob import TritonLogprobBackend

    register("triton", TritonLogprobBackend)


@rlsdk.hookimpl
def register_losses(register) -> None:  # noqa: ANN001 - the hook's callback
    """Register ``fused_clipped_pg``: ``clipped_pg`` with a fused Triton forward/backward."""
    from rlsdk_kernels.pg_loss import FusedClippedPG

    register("fused_clipped_pg", FusedClippedPG)
