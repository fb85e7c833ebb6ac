"""The rlsdk plugin of ``rlsdk_kernels`` (entry point ``kernels = "rlsdk_kernels.plugin"``): its components.

The op modules (:mod:`~rlsdk_kernels.linear_logprob`, :mod:`~rlsdk_kernels.linear_loss`,
:mod:`~rlsdk_kernels.linear_pg_loss`, :mod:`~rlsdk_kernels.pg_loss`) are leaf ops: functions and
autograd Functions on tensors that know no component. This module holds the components built on them
and the hooks that register them:

- :class:`TritonLogprobBackend`, registered as the ``triton`` logprob backend. It is the one owner of
  "the loss from hidden states": :meth:`TritonLogprobBackend.loss_from_hidden` looks the loss's type
  up in :data:`LOSS_STRATEGIES` (the fused linear clipped-PG kernel for :class:`FusedClippedPG`) and
  runs any other loss with :data:`ANY_LOSS` (:func:`rlsdk_kernels.linear_loss.fused_linear_loss`).
  Every chunk and tile option of those kernels is an option of the backend.
- :class:`FusedClippedPG`, registered as the ``fused_clipped_pg`` loss: ``clipped_pg`` computed by one
  Triton launch (:func:`rlsdk_kernels.pg_loss.fused_pg_loss`); it has ``clipped_pg``'s options and no
  kernel option.

Loaded at every rlsdk start-up, so it imports neither triton, CUDA nor ``torch._dynamo``: the op modules
are imported when a component is built or called (they import torch, never triton nor ``torch._dynamo``
at import: their ``torch.compiler.disable`` is built on the first call, see ``rlsdk_kernels._compile``),
and triton only when a kernel first runs. Registering the classes themselves keeps rlsdk's option
checking (an unknown option is a ``ConfigError`` listing the valid ones). ``tests/test_startup.py``
checks this.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

import rlsdk
from rlsdk import HiddenLossOutput, LogprobOutput, LossOutput, TrainBatch
from rlsdk.validation import check_bool, check_choice, check_int, check_number
from rlsdk_kernels._common import GRAD_ACCUM, check_optional_int, supports, triton_problem
from rlsdk_plugins.policy_gradient import ClippedPG

__all__ = [
    "ANY_LOSS",
    "LOSS_STRATEGIES",
    "FusedClippedPG",
    "Strategy",
    "TritonLogprobBackend",
    "register_logprob_backends",
    "register_losses",
]


# --------------------------------------------------------------------------------------------------
# The fused_clipped_pg loss


class FusedClippedPG(ClippedPG):
    """``clipped_pg`` with a fused Triton forward/backward: same options, loss, gradient and metrics.

    See ``rlsdk_plugins.policy_gradient.ClippedPG`` for the maths and the references of each
    option, and :mod:`rlsdk_kernels.pg_loss` for the fused formulation. Every KL estimator (``+``
    variants included), ``delta``, dual clip and all four aggregation modes run in the kernel; the
    entropy bonus is added with PyTorch on ``batch.entropy``. On a device
    :func:`rlsdk_kernels.pg_loss.supports` rejects, or for log-probs that are neither float32 nor
    float64 (``clipped_pg`` would compute in their low precision), the call is delegated to
    ``clipped_pg``. The options and their validation are ``clipped_pg``'s own (this class subclasses it).

    From hidden states, the ``triton`` logprob backend computes this loss with one more kernel
    (:func:`rlsdk_kernels.linear_pg_loss.fused_linear_pg_loss`: gradients formed in the forward,
    never more than a chunk of logits); its chunk options are the backend's
    (:class:`TritonLogprobBackend`), not this loss's.
    """

    name = "fused_clipped_pg"

    @property
    def opts(self) -> dict[str, Any]:
        """The options the kernels read (everything but ``entropy_coef``)."""
        return {
            "eps_low": self.eps_low, "eps_high": self.eps_high, "dual_clip_c": self.dual_clip_c, "delta": self.delta,
            "logratio_clamp": self.logratio_clamp, "kl_coef": self.kl_coef, "kl_estimator": self.kl_estimator,
            "kl_input_clamp": self.kl_input_clamp, "kl_output_clamp": self.kl_output_clamp, "agg": self.agg,
        }  # fmt: skip

    def check_ref(self, batch: TrainBatch) -> None:
        """A ``ValueError`` when the KL term needs ``batch.ref_logprobs`` and it is None."""
        if batch.ref_logprobs is None and self.needs_ref_logprobs:
            raise ValueError(
                f"loss {self.name}: loss.kl_coef = {self.kl_coef:g} needs batch.ref_logprobs, but it is "
                "None (the trainer fills it when loss.needs_ref_logprobs is True; set kl_coef=0 to drop the KL term)"
            )

    def metrics_from_sums(self, sums: dict[str, Tensor], batch: TrainBatch, with_entropy: bool) -> dict[str, Tensor]:
        """Token means of a kernel's token sums, in ``clipped_pg``'s order (0-dim tensors: no device sync)."""
        keys = ["pg_loss", "clip_frac", "ratio_mean"]
        if self.dual_clip_c is not None:
            keys.append("dual_clip_frac")
        if batch.ref_logprobs is not None:
            keys.append("kl")
        if with_entropy:
            keys.append("entropy")
        n_tok = max(float(batch.num_tokens or 0.0), 1.0)
        return {k: sums[k].detach() / n_tok for k in keys}

    def __call__(self, logprobs: Tensor, batch: TrainBatch) -> LossOutput:
        """Loss of one micro-batch, normalised by the global counts of ``batch``.

        Args:
            logprobs: ``[B, T]`` log-probabilities of the sampled tokens under the current policy.
            batch: The micro-batch with the global batch's counts.

        Returns:
            ``LossOutput(loss=scalar, metrics)`` equal to ``clipped_pg``'s with the same options.
        """
        if logprobs.shape != batch.mask.shape:
            raise ValueError(
                f"loss {self.name}: logprobs {tuple(logprobs.shape)} must match mask {tuple(batch.mask.shape)}"
            )
        if not supports(logprobs.device) or logprobs.dtype not in (torch.float32, torch.float64):
            return super().__call__(logprobs, batch)
        from rlsdk_kernels.pg_loss import fused_pg_loss

        self.check_ref(batch)
        loss, sums = fused_pg_loss(logprobs, batch, **self.opts)
        metrics = self.metrics_from_sums(sums, batch, with_entropy=False)
        loss = loss + self._entropy_term(batch, batch.mask > 0, metrics)  # clipped_pg's own bonus
        order = ("pg_loss", "clip_frac", "ratio_mean", "dual_clip_frac", "kl", "entropy")  # clipped_pg's order
        return LossOutput(loss=loss.to(logprobs.dtype), metrics={k: metrics[k] for k in order if k in metrics})


# --------------------------------------------------------------------------------------------------
# The loss from hidden states: strategies of the triton backend

#: A fused strategy, called ``(backend, hidden [B*T, H], weight [V, H], targets [B*T], batch, loss, temperature)``
#: -> the result, or None where it does not apply (then the trainer runs the backend, then the loss).
Strategy = Callable[["TritonLogprobBackend", Tensor, Tensor, Tensor, TrainBatch, Any, float], "HiddenLossOutput | None"]


def _fused_clipped_pg(
    backend: TritonLogprobBackend,
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    batch: TrainBatch,
    loss: FusedClippedPG,
    temperature: float,
) -> HiddenLossOutput:
    """:class:`FusedClippedPG` by :func:`rlsdk_kernels.linear_pg_loss.fused_linear_pg_loss`: log-probs,
    loss terms and gradients in one row kernel per chunk of trained tokens."""
    from rlsdk_kernels.linear_pg_loss import fused_linear_pg_loss

    loss.check_ref(batch)
    config = backend.pg_cuda_config if hidden.is_cuda else backend.pg_cpu_config
    value, sums, logprobs, entropy = fused_linear_pg_loss(
        hidden, weight, targets, batch, temperature=temperature, config=config,
        entropy_coef=loss.entropy_coef, **loss.opts,
    )  # fmt: skip
    metrics = loss.metrics_from_sums(sums, batch, loss.needs_entropy)
    return HiddenLossOutput(output=LossOutput(loss=value, metrics=metrics), logprobs=logprobs, entropy=entropy)


def _any_loss(
    backend: TritonLogprobBackend,
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    batch: TrainBatch,
    loss: Any,
    temperature: float,
) -> HiddenLossOutput | None:
    """Any rlsdk loss by :func:`rlsdk_kernels.linear_loss.fused_linear_loss` (the loss's own PyTorch code
    on chunks of whole rows); None where one row's trained tokens alone exceed the chunk budget."""
    from rlsdk_kernels.linear_loss import fused_linear_loss

    result = fused_linear_loss(
        hidden, weight, targets, batch, loss, temperature=temperature,
        config=backend.cuda_config if hidden.is_cuda else backend.cpu_config,
        chunk_mib=backend.fuse_loss_mib, chunk_tokens=backend.fuse_loss_tokens, grad_accum=backend.grad_accum,
    )  # fmt: skip
    if result is None:
        return None
    output, logprobs, entropy = result
    return HiddenLossOutput(output=output, logprobs=logprobs, entropy=entropy)


#: The fused strategy of each loss type (the exact type, since a subclass may change the maths, so it gets
#: :data:`ANY_LOSS`, which calls the loss itself). A plugin may add its own loss type here.
LOSS_STRATEGIES: dict[type, Strategy] = {FusedClippedPG: _fused_clipped_pg}
#: The strategy of every other loss.
ANY_LOSS: Strategy = _any_loss


# --------------------------------------------------------------------------------------------------
# The triton logprob backend


class TritonLogprobBackend:
    """The ``triton`` logprob backend: fused linear log-prob (+ entropy), never holding ``[N, V]`` logits.

    Same formulas and call as the ``torch`` backend (``rlsdk_plugins.logprob``); computed by
    :func:`rlsdk_kernels.linear_logprob.fused_linear_logprobs`; beyond the inputs it holds at most
    ``forward_mib`` in the forward and ``backward_mib`` plus an fp32 ``[N, H]`` accumulator in the backward.

    The options ``block_n``, ``block_v``, ``block_h``, ``vocab_splits``, ``matmul``, ``forward_chunk``,
    ``forward_mib``, ``backward_slice``, ``backward_mib``, ``num_warps`` and ``allow_tf32`` are those of
    :class:`rlsdk_kernels.linear_logprob.KernelConfig` (for the tiles and warps, None keeps the device
    default: ``CUDA_TILES`` of the ``matmul`` path on CUDA, ``CPU_TILES`` under the interpreter).

    For the policy update it also offers :meth:`loss_from_hidden`: the loss straight from hidden
    states, its gradients formed while each chunk's logits are at hand (6THV instead of 8THV), by the
    strategy of the loss's type (:data:`LOSS_STRATEGIES`, else :data:`ANY_LOSS`). The ``fuse_loss*``
    and ``grad_accum`` options are those of every strategy.

    Args:
        ignore_index: Target id whose tokens get log-prob 0, entropy 0 and no gradient.
        fuse_loss: Offer :meth:`loss_from_hidden` (False: the trainer uses this backend, then the loss).
        fuse_loss_mib: Memory budget of one chunk of logits in :meth:`loss_from_hidden`, in MiB.
        fuse_loss_tokens: Trained tokens per chunk of :meth:`loss_from_hidden` (at most, for a chunk
            of whole rows of any loss; exactly, but for the last chunk, for ``fused_clipped_pg``);
            None: as many as fit ``fuse_loss_mib``.
        grad_accum: ``dW`` accumulation across the chunks of :meth:`loss_from_hidden`: ``"weight"``
            (in the weight's dtype) or ``"float32"`` (exact, ``4 V H`` more bytes).
    """

    @property
    def priority(self) -> int:
        """100 (above ``torch``'s 10, so ``auto`` picks it) on a machine with CUDA; 0 on a machine
        without, so ``auto`` never picks the slow interpreter on a CPU even when ``TRITON_INTERPRET=1``
        is set for tests (``logprob.backend=triton`` still selects it)."""
        return 100 if torch.cuda.is_available() else 0

    def __init__(
        self,
        block_n: int | None = None,
        block_v: int | None = None,
        block_h: int | None = None,
        vocab_splits: int | None = None,
        matmul: str = "torch",
        forward_chunk: int | None = None,
        forward_mib: float = 224.0,
        backward_slice: int | None = None,
        backward_mib: float = 96.0,
        num_warps: int | None = None,
        allow_tf32: bool = False,
        ignore_index: int = -100,
        fuse_loss: bool = True,
        fuse_loss_mib: float = 384.0,
        fuse_loss_tokens: int | None = None,
        grad_accum: str = "weight",
    ):
        from rlsdk_kernels.linear_logprob import CPU_TILES, CUDA_TILES, MATMULS, KernelConfig
        from rlsdk_kernels.linear_pg_loss import CPU_CONFIG, FusedLossConfig

        self.ignore_index = check_int(ignore_index, "logprob.ignore_index")
        self.fuse_loss = check_bool(fuse_loss, "logprob.fuse_loss")
        self.fuse_loss_mib = check_number(fuse_loss_mib, "logprob.fuse_loss_mib", low=0.0, low_open=True)
        self.fuse_loss_tokens = check_optional_int(
            fuse_loss_tokens, "logprob.fuse_loss_tokens", "None (from fuse_loss_mib)"
        )
        self.grad_accum = check_choice(grad_accum, "logprob.grad_accum", GRAD_ACCUM)
        tiles = {k: v for k, v in (("block_n", block_n), ("block_v", block_v), ("block_h", block_h)) if v is not None}
        if num_warps is not None:
            tiles["num_warps"] = num_warps
        common: dict[str, Any] = {
            "vocab_splits": vocab_splits, "matmul": matmul, "forward_chunk": forward_chunk, "forward_mib": forward_mib,
            "backward_slice": backward_slice, "backward_mib": backward_mib, "allow_tf32": allow_tf32,
        }  # fmt: skip
        check_choice(matmul, "logprob.matmul", MATMULS)
        # Built (and so validated) now, not at the first call.
        self.cuda_config = KernelConfig(**{**CUDA_TILES[matmul], **tiles}, **common)
        self.cpu_config = KernelConfig(**{**CPU_TILES, **tiles}, **common)
        self.pg_cuda_config = FusedLossConfig(
            chunk_tokens=self.fuse_loss_tokens, chunk_mib=self.fuse_loss_mib, grad_accum=self.grad_accum
        )
        # The interpreter is faster with wide row tiles (numpy runs each program in turn).
        self.pg_cpu_config = dataclasses.replace(
            self.pg_cuda_config, block_n=CPU_CONFIG.block_n, block_v=CPU_CONFIG.block_v
        )

    def supports(self, device: torch.device | str) -> bool:
        """CUDA with triton installed, or CPU when ``TRITON_INTERPRET=1`` (tests, debugging)."""
        return supports(device)

    def __call__(
        self, hidden: Tensor, weight: Tensor, targets: Tensor, *, temperature: float = 1.0, with_entropy: bool = False
    ) -> LogprobOutput:
        """Log-probabilities of ``targets``.

        Args:
            hidden: ``[N, H]`` final hidden states.
            weight: ``[V, H]`` output-layer weight.
            targets: ``[N]`` long token ids (or ``ignore_index``).
            temperature: Divides the logits (the sampling temperature).
            with_entropy: Also return the entropy of each temperature-scaled distribution.

        Returns:
            ``rlsdk.LogprobOutput(logprobs [N] float32, entropy [N] float32 or None)``.
        """
        if not self.supports(hidden.device):
            problem = triton_problem()
            raise RuntimeError(
                f"triton logprob backend: device {hidden.device} is not supported (needs CUDA with triton, "
                f"or CPU with TRITON_INTERPRET=1{'; ' + problem if problem else ''}); use logprob.backend=torch"
            )
        from rlsdk_kernels.linear_logprob import fused_linear_logprobs

        config = self.cuda_config if hidden.is_cuda else self.cpu_config
        logprobs, entropy = fused_linear_logprobs(
            hidden, weight, targets, temperature, with_entropy, self.ignore_index, config
        )
        return LogprobOutput(logprobs=logprobs.float(), entropy=entropy.float() if entropy is not None else None)

    def strategy(self, loss: Any) -> Strategy:
        """The fused strategy of ``loss``: :data:`LOSS_STRATEGIES` of its type, else :data:`ANY_LOSS`."""
        return LOSS_STRATEGIES.get(type(loss), ANY_LOSS)

    def loss_from_hidden(
        self, hidden: Tensor, weight: Tensor, targets: Tensor, batch: TrainBatch, loss: Any, *, temperature: float = 1.0
    ) -> HiddenLossOutput | None:
        """``loss`` of a micro-batch straight from hidden states, by the strategy of its type (:meth:`strategy`).

        Args:
            hidden: ``[B * T, H]`` hidden states predicting the completion tokens of ``batch``.
            weight: ``[V, H]`` output-layer weight.
            targets: ``[B * T]`` completion token ids.
            batch: The micro-batch (``rlsdk.TrainBatch``, with the global batch's counts).
            loss: The configured loss (any rlsdk loss).
            temperature: Divides the logits (the sampling temperature).

        Returns:
            ``rlsdk.HiddenLossOutput(output, logprobs [B, T], entropy [B, T])`` (detached log-probs and
            entropies, 0 at untrained tokens), or None where no fused path applies (``fuse_loss`` off,
            a device this backend does not support, a row whose trained tokens alone exceed the chunk
            budget of :data:`ANY_LOSS`): the caller then uses this backend and the loss.
        """
        if not self.fuse_loss or not self.supports(hidden.device):
            return None
        return self.strategy(loss)(self, hidden, weight, targets, batch, loss, float(temperature))


# --------------------------------------------------------------------------------------------------
# Hooks


@rlsdk.hookimpl
def register_logprob_backends(register) -> None:  # noqa: ANN001 - the hook's callback
    """Register the ``triton`` logprob backend (priority 100 where CUDA is available: ``auto`` picks it)."""
    register("triton", TritonLogprobBackend)


@rlsdk.hookimpl
def register_losses(register) -> None:  # noqa: ANN001 - the hook's callback
    """Register ``fused_clipped_pg``: ``clipped_pg`` with a fused Triton forward/backward."""
    register("fused_clipped_pg", FusedClippedPG)
