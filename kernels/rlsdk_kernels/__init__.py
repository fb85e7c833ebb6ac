"""rlsdk_kernels: Triton GPU kernels for rlsdk and the plugin that registers them.

- :mod:`rlsdk_kernels.plugin`: the components and the hook implementations (entry point
  ``kernels = "rlsdk_kernels.plugin"``): the ``triton`` logprob backend
  (:class:`~rlsdk_kernels.plugin.TritonLogprobBackend`, with the table of fused loss strategies of its
  ``loss_from_hidden``) and the ``fused_clipped_pg`` loss (:class:`~rlsdk_kernels.plugin.FusedClippedPG`).
- Leaf ops, which know no component: :mod:`rlsdk_kernels.linear_logprob` (fused linear log-prob and
  entropy), :mod:`rlsdk_kernels.linear_loss` (any loss from hidden states),
  :mod:`rlsdk_kernels.pg_loss` (the clipped PG loss from log-probs) and
  :mod:`rlsdk_kernels.linear_pg_loss` (the clipped PG loss from hidden states).

Importing this package (or the plugin) never imports triton or touches CUDA; the kernels are
compiled on first use. On a CPU they run only under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

__all__: list[str] = []
