"""rlsdk_kernels: Triton GPU kernels for rlsdk and the plugin that registers them.

- :mod:`rlsdk_kernels.linear_logprob`: fused linear log-prob (+ entropy) and the ``triton`` logprob
  backend (:class:`~rlsdk_kernels.linear_logprob.TritonLogprobBackend`).
- :mod:`rlsdk_kernels.plugin`: the hook implementations (entry point ``kernels = "rlsdk_kernels.plugin"``).

Importing this package (or the plugin) never imports triton or touches CUDA; the kernels are
compiled on first use. On a CPU they run only under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

__all__: list[str] = []
