"""Logprob backends: per-token log-probabilities and entropies from hidden states and the output weight.

Both backends compute, for every token ``n`` with hidden state ``x_n`` and sampled token ``y_n``::

    s_n     = x_n W^T / tau                        logits after temperature, [V]
    logp_n  = s_{n, y_n} - logsumexp(s_n)
    Ent_n   = logsumexp(s_n) - sum_j softmax(s_n)_j * s_{n, j}

in float32 (float64 inputs stay float64; bfloat16/float16 inputs are upcast), and return float32.
Temperature is applied here and only here (verl, TRL and OpenRLHF divide the training logits by the
rollout temperature).

- ``torch``: the plain formula with PyTorch autograd. Holds the ``[N, V]`` float32 logits (and their
  softmax for the backward), which is fine on CPU and for small vocabularies.
- ``chunked``: a ``torch.autograd.Function`` that walks the vocabulary in chunks of ``chunk_size``
  columns and never holds more than ``[N, chunk_size]`` logits, in forward or backward (the design of
  Liger's chunked selective log-prob and verl's fused linear-for-PPO, chunked over the vocabulary).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

import rlsdk
from rlsdk import ConfigError, LogprobOutput
from rlsdk.validation import check_logprob_inputs

__all__ = ["TorchLogprob", "ChunkedLogprob", "chunked_logprobs", "register_logprob_backends"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for low-precision inputs, float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


class TorchLogprob:
    """The plain PyTorch backend (default on CPU).

    ``s = (x W^T) / tau`` in float32, ``logp = log_softmax(s)[y]``,
    ``Ent = logsumexp(s) - sum_j softmax(s)_j s_j`` (the entropy of verl/TRL, after temperature),
    evaluated as the equal ``-sum_j p_j log p_j`` to avoid cancelling two large terms in float32.
    Gradients come from autograd. Memory: the ``[N, V]`` logits and their softmax.

    Attributes:
        priority: 10, so ``auto`` prefers it wherever no faster backend applies.
    """

    priority: int = 10

    def supports(self, device: torch.device) -> bool:
        """Every device."""
        return True

    def __call__(
        self, hidden: Tensor, weight: Tensor, targets: Tensor, *, temperature: float = 1.0, with_entropy: bool = False
    ) -> LogprobOutput:
        """Log-probabilities of ``targets``.

        Args:
            hidden: ``[N, H]`` final hidden states.
            weight: ``[V, H]`` output-layer weight.
            targets: ``[N]`` long token ids.
            temperature: Divides the logits (the sampling temperature).
            with_entropy: Also return the entropy of each temperature-scaled distribution.

        Returns:
            ``LogprobOutput(logprobs [N] float32, entropy [N] float32 or None)``.
        """
        check_logprob_inputs(hidden, weight, targets, temperature)
        dtype = _compute_dtype(torch.promote_types(hidden.dtype, weight.dtype))
        scores = (hidden.to(dtype) @ weight.to(dtype).T) / temperature  # [N, V]
        log_p = torch.log_softmax(scores, dim=-1)  # s - logsumexp(s)
        logprobs = log_p.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
        entropy = None
        if with_entropy:
            # lse - sum_j p_j s_j == -sum_j p_j log p_j; the second form avoids cancelling two large terms.
            entropy = -(torch.exp(log_p) * log_p).sum(-1).float()
        return LogprobOutput(logprobs=logprobs.float(), entropy=entropy)


class _ChunkedLogprobFunction(torch.autograd.Function):
    """Log-probabilities and entropies over vocabulary chunks, with a recomputing backward.

    Forward keeps per token an online ``(m, S, P)`` over chunks: the running maximum ``m``, the sum
    ``S = sum_j exp(s_j - m)`` and ``P = sum_j exp(s_j - m) (s_j - m)``, plus the target score ``s_y``.
    When ``m`` grows to ``m'``: ``S' = S e^(m - m')`` and ``P' = (P + S (m - m')) e^(m - m')``. Then
    ``lse = m + log S``, ``logp = s_y - lse`` and ``Ent = lse - sum_j p_j s_j = log S - P / S``.

    Backward recomputes each chunk with ``log p_j = s_j - lse`` and (kernels.md section 0)::

        ds_j = g_logp * (onehot_j - p_j) - g_ent * p_j * (log p_j + Ent),   dz = ds / tau
        dX += dz W_chunk,   dW_chunk = dz^T X

    ``dX`` accumulates across chunks in the compute dtype (float32 or float64) and is cast to the
    hidden states' dtype at the end; each ``dW`` slice is one exact GEMM, cast once to W's dtype.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        hidden: Tensor,
        weight: Tensor,
        targets: Tensor,
        temperature: float,
        chunk_size: int,
        with_entropy: bool,
    ) -> tuple[Tensor, Tensor]:
        dtype = _compute_dtype(torch.promote_types(hidden.dtype, weight.dtype))
        x = hidden.detach().to(dtype)
        n, vocab = x.shape[0], weight.shape[0]
        targets = targets.long()
        running_max = torch.full((n,), float("-inf"), dtype=dtype, device=x.device)
        sum_exp = torch.zeros(n, dtype=dtype, device=x.device)
        sum_exp_s = torch.zeros(n, dtype=dtype, device=x.device)
        target_score = torch.zeros(n, dtype=dtype, device=x.device)
        for start in range(0, vocab, chunk_size):
            end = min(start + chunk_size, vocab)
            scores = (x @ weight.detach()[start:end].to(dtype).T) / temperature  # [N, c]
            new_max = torch.maximum(running_max, scores.max(dim=-1).values)
            shift = running_max - new_max  # <= 0; -inf on the first chunk
            rescale = torch.exp(shift)
            shifted = scores - new_max.unsqueeze(-1)
            e = torch.exp(shifted)
            if with_entropy:
                # sum e^(s-m) (s-m) re-centred on the new maximum (0 * -inf guarded on the first chunk).
                carried = torch.where(sum_exp > 0, sum_exp_s + sum_exp * shift, torch.zeros_like(sum_exp))
                sum_exp_s = carried * rescale + (e * shifted).sum(-1)
            sum_exp = sum_exp * rescale + e.sum(-1)
            running_max = new_max
            in_chunk = (targets >= start) & (targets < end)
            local = (targets - start).clamp(0, end - start - 1)
            target_score = torch.where(in_chunk, scores.gather(-1, local.unsqueeze(-1)).squeeze(-1), target_score)
        log_sum_exp = torch.log(sum_exp)
        lse = running_max + log_sum_exp
        logprobs = target_score - lse
        # Ent = lse - sum p s = log S - sum e^(s-m) (s-m) / S (no cancellation of large terms).
        entropy = log_sum_exp - sum_exp_s / sum_exp if with_entropy else torch.zeros_like(lse)
        if not with_entropy:
            ctx.mark_non_differentiable(entropy)
        ctx.save_for_backward(hidden, weight, targets, lse, entropy)
        ctx.temperature = temperature
        ctx.chunk_size = chunk_size
        ctx.with_entropy = with_entropy
        ctx.set_materialize_grads(False)
        return logprobs, entropy

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_logprobs: Tensor | None, grad_entropy: Tensor | None):  # type: ignore[override]
        hidden, weight, targets, lse, entropy = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dtype = lse.dtype
        n, vocab = hidden.shape[0], weight.shape[0]
        if grad_entropy is not None and not ctx.with_entropy:
            grad_entropy = None
        if (grad_logprobs is None and grad_entropy is None) or not (need_hidden or need_weight):
            return None, None, None, None, None, None
        x = hidden.to(dtype)
        grad_x = torch.zeros(x.shape, dtype=dtype, device=x.device) if need_hidden else None
        # Each dW slice is one exact GEMM (no accumulation across chunks), so it can go straight to W's dtype.
        grad_w = torch.empty_like(weight) if need_weight else None
        g_logp = grad_logprobs.to(dtype) if grad_logprobs is not None else None
        g_ent = grad_entropy.to(dtype) if grad_entropy is not None else None
        rows = torch.arange(n, device=x.device)
        for start in range(0, vocab, ctx.chunk_size):
            end = min(start + ctx.chunk_size, vocab)
            w = weight[start:end].to(dtype)
            log_p = (x @ w.T) / ctx.temperature - lse.unsqueeze(-1)  # [N, c]
            p = torch.exp(log_p)
            grad_s = torch.zeros_like(p)
            if g_logp is not None:
                grad_s -= g_logp.unsqueeze(-1) * p
                in_chunk = (targets >= start) & (targets < end)
                grad_s[rows[in_chunk], targets[in_chunk] - start] += g_logp[in_chunk]
            if g_ent is not None:
                grad_s -= g_ent.unsqueeze(-1) * p * (log_p + entropy.unsqueeze(-1))
            grad_z = grad_s / ctx.temperature
            if grad_x is not None:
                grad_x += grad_z @ w
            if grad_w is not None:
                grad_w[start:end] = (grad_z.T @ x).to(weight.dtype)
        return (
            grad_x.to(hidden.dtype) if grad_x is not None else None,
            grad_w,
            None,
            None,
            None,
            None,
        )


def chunked_logprobs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    temperature: float = 1.0,
    chunk_size: int = 4096,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor]:
    """Differentiable chunked log-probabilities, in the compute dtype (float32, or float64 for float64 inputs).

    Args:
        hidden: ``[N, H]``.
        weight: ``[V, H]``.
        targets: ``[N]`` long.
        temperature: Divides the logits.
        chunk_size: Vocabulary columns per chunk.
        with_entropy: Compute the entropy (otherwise the second output is zeros without gradient).

    Returns:
        ``(logprobs [N], entropy [N])``.
    """
    return _ChunkedLogprobFunction.apply(hidden, weight, targets, temperature, chunk_size, with_entropy)


class ChunkedLogprob:
    """Memory-bounded backend: at most ``[N, chunk_size]`` logits alive at any time.

    Same formulas as :class:`TorchLogprob` (see :class:`_ChunkedLogprobFunction` for the online
    softmax and the gradient). Costs one extra logits GEMM in the backward (8THV instead of 6THV).
    Chosen explicitly with ``logprob.backend=chunked``.

    Args:
        chunk_size: Vocabulary columns per chunk (> 0). 4096 is the vocabulary tile of Liger's chunked
            selective log-prob.

    Attributes:
        priority: 0, so ``auto`` never prefers it over ``torch``.
    """

    priority: int = 0

    def __init__(self, chunk_size: int = 4096):
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ConfigError(
                f"logprob.chunk_size must be a positive integer (vocabulary columns per chunk); got {chunk_size!r}"
            )
        self.chunk_size = chunk_size

    def supports(self, device: torch.device) -> bool:
        """Every device."""
        return True

    def __call__(
        self, hidden: Tensor, weight: Tensor, targets: Tensor, *, temperature: float = 1.0, with_entropy: bool = False
    ) -> LogprobOutput:
        """Log-probabilities of ``targets``; arguments and result as :meth:`TorchLogprob.__call__`."""
        check_logprob_inputs(hidden, weight, targets, temperature)
        logprobs, entropy = chunked_logprobs(hidden, weight, targets, float(temperature), self.chunk_size, with_entropy)
        return LogprobOutput(logprobs=logprobs.float(), entropy=entropy.float() if with_entropy else None)


@rlsdk.hookimpl
def register_logprob_backends(register) -> None:  # noqa: ANN001 - the hook's callback
    """Register the ``torch`` and ``chunked`` backends."""
    register("torch", TorchLogprob)
    register("chunked", ChunkedLogprob)
