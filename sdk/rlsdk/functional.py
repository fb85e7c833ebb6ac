"""Tensor maths shared by components: aggregation, whitening, group statistics, KL estimators.

Each function gives its formula and names the paper or system it matches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

if TYPE_CHECKING:
    from rlsdk.types import TrainBatch

__all__ = [
    "AGGREGATION_MODES",
    "KL_ESTIMATORS",
    "aggregate",
    "aggregation_weights",
    "masked_mean",
    "masked_whiten",
    "group_stats",
    "result_dtype",
    "broadcast_to_tokens",
    "kl_estimate",
]

AGGREGATION_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("k1", "k2", "k3", "abs", "k1+", "k2+", "k3+", "abs+")


def aggregate(values: Tensor, batch: TrainBatch, mode: str = "token-mean") -> Tensor:
    """Reduce per-token ``values [B, T]`` to a scalar with the *global* counts of ``batch``.

    With ``m`` the mask, ``N_tok = batch.num_tokens``, ``N_seq = batch.num_seqs`` (non-empty
    sequences), ``N_rows = batch.num_rows`` and ``C = batch.max_length``:

    - ``token-mean`` (verl default, DAPO): ``sum(m * L) / N_tok``
    - ``seq-mean-token-mean`` (original GRPO): ``sum_i (sum_t m * L / |y_i|) / N_seq``
    - ``seq-mean-token-sum``: ``sum(m * L) / N_seq``
    - ``seq-mean-token-sum-norm`` (Dr. GRPO, TRL ``dr_grpo``): ``sum(m * L) / (N_rows * C)``.
      verl divides by ``C`` only (no batch division); that is this value times ``N_rows``.

    Because the counts are global, summing this over the micro-batches of a batch gives the value of
    the whole batch, and so does the gradient. Masked positions are zeroed with ``where`` before
    summing, so a NaN or inf there never leaks into the result.

    Args:
        values: ``[B, T]`` per-token values.
        batch: Supplies ``mask`` and the global counts.
        mode: One of :data:`AGGREGATION_MODES`.

    Returns:
        A scalar tensor (0 when the batch has no valid token).
    """
    mask = batch.mask
    if values.shape != mask.shape:
        raise ValueError(f"aggregate: values {tuple(values.shape)} must match mask {tuple(mask.shape)}")
    masked = torch.where(mask > 0, values * mask, torch.zeros((), dtype=values.dtype, device=values.device))
    row_divisor, batch_divisor = _aggregation_divisors(mask, batch, mode)
    if row_divisor is not None:
        return (masked.sum(-1) / row_divisor).sum() / batch_divisor
    return masked.sum() / batch_divisor


def aggregation_weights(
    mask: Tensor, batch: TrainBatch, mode: str = "token-mean", dtype: torch.dtype | None = None
) -> Tensor:
    """The per-row weights ``s [B]`` of an aggregation mode: ``aggregate(L) = sum_{b,t} m_{b,t} s_b L_{b,t}``.

    With the counts of :func:`aggregate` (``N_tok``, ``N_seq``, ``N_rows``, ``C``, global, each at
    least 1) and ``|y_b| = max(sum_t m_{b,t}, 1)``:

    - ``token-mean``: ``s_b = 1 / N_tok``
    - ``seq-mean-token-mean``: ``s_b = 1 / (|y_b| N_seq)``
    - ``seq-mean-token-sum``: ``s_b = 1 / N_seq``
    - ``seq-mean-token-sum-norm``: ``s_b = 1 / (N_rows C)``

    So ``m * s[:, None]`` is the gradient of the aggregate with respect to each per-token value,
    which is what a fused kernel that forms the gradient itself needs. :func:`aggregate` reads the
    same table of counts (it divides by them rather than multiplying by ``s``, so its rounding is
    that of the formulas it documents).

    Args:
        mask: ``[B, T]`` loss mask (``batch.mask`` or the mask of the rows at hand).
        batch: Supplies the global counts.
        mode: One of :data:`AGGREGATION_MODES`.
        dtype: dtype of the result (and of the row lengths); default the mask's dtype when it is
            floating point, else the default dtype.

    Returns:
        ``[B]`` weights on the mask's device.
    """
    if dtype is None:
        dtype = mask.dtype if mask.is_floating_point() else torch.get_default_dtype()
    row_divisor, batch_divisor = _aggregation_divisors(mask, batch, mode, dtype)
    if row_divisor is not None:
        return 1.0 / (row_divisor * batch_divisor)
    return torch.full((mask.shape[0],), 1.0 / batch_divisor, dtype=dtype, device=mask.device)


def _aggregation_divisors(
    mask: Tensor, batch: TrainBatch, mode: str, dtype: torch.dtype | None = None
) -> tuple[Tensor | None, float]:
    """``(row divisor [B] or None, batch divisor)`` of ``mode``: ``s_b = 1 / (row_b * batch)``.

    The one table of the aggregation modes (:func:`aggregate`, :func:`aggregation_weights`). The row
    divisor is ``max(|y_b|, 1)`` (the row lengths, in ``dtype``; in the mask's dtype when None) for
    ``seq-mean-token-mean`` and None (1) for the other modes.
    """
    if mode == "token-mean":
        return None, max(float(batch.num_tokens or 0.0), 1.0)
    if mode == "seq-mean-token-mean":
        lengths = (mask if dtype is None else mask.to(dtype)).sum(-1)
        return lengths.clamp_min(1.0), max(float(batch.num_seqs or 0.0), 1.0)
    if mode == "seq-mean-token-sum":
        return None, max(float(batch.num_seqs or 0.0), 1.0)
    if mode == "seq-mean-token-sum-norm":
        return None, max(float(batch.num_rows or 0.0), 1.0) * max(float(batch.max_length or 0.0), 1.0)
    raise ValueError(f"unknown aggregation mode {mode!r}; valid modes: {', '.join(AGGREGATION_MODES)}")


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` where ``mask`` is 1 (0 where nothing is valid), over ``dim`` or all."""
    m = mask.to(values.dtype)
    zeroed = torch.where(m > 0, values, torch.zeros((), dtype=values.dtype, device=values.device))
    if dim is None:
        return zeroed.sum() / m.sum().clamp_min(1.0)
    return zeroed.sum(dim) / m.sum(dim).clamp_min(1.0)


def masked_whiten(
    values: Tensor, mask: Tensor, style: Literal["verl", "openrlhf"] = "verl", shift_mean: bool = True
) -> Tensor:
    """Whiten ``values`` over the valid tokens of the whole batch; masked positions become 0.

    - ``verl`` (W_v): ``(x - mean) / sqrt(var_unbiased + 1e-8)``.
    - ``openrlhf`` (W_o): ``(x - mean) * rsqrt(max(var_biased, 1e-8))``.

    With ``shift_mean=False`` the mean is added back after scaling (verl's option).
    """
    m = mask.to(values.dtype)
    n = m.sum()
    mean = masked_mean(values, m)
    centred = torch.where(m > 0, values - mean, torch.zeros((), dtype=values.dtype, device=values.device))
    sq = (centred**2).sum()
    if style == "verl":
        var = sq / (n - 1).clamp_min(1.0)
        out = centred / torch.sqrt(var + 1e-8)
    elif style == "openrlhf":
        var = sq / n.clamp_min(1.0)
        out = centred * torch.rsqrt(var.clamp_min(1e-8))
    else:
        raise ValueError(f"masked_whiten: unknown style {style!r}; valid: 'verl', 'openrlhf'")
    if not shift_mean:
        out = out + mean
    return out * m


def group_stats(values: Tensor, group_ids: Tensor, unbiased: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row group mean, group std and group size of ``values [B]`` grouped by ``group_ids [B]``.

    The std uses Bessel's correction (``n - 1``) when ``unbiased`` (verl, TRL, OpenRLHF, NeMo RL);
    a group of one has std 0 under either convention here (callers decide what that means).

    Returns:
        ``(mean [B], std [B], size [B])``, each row holding the statistic of its own group.
    """
    _, inverse = torch.unique(group_ids, return_inverse=True)
    k = int(inverse.max()) + 1 if inverse.numel() else 0
    dtype = values.dtype
    size = torch.zeros(k, dtype=dtype, device=values.device).index_add_(0, inverse, torch.ones_like(values))
    total = torch.zeros(k, dtype=dtype, device=values.device).index_add_(0, inverse, values)
    mean = total / size
    dev = values - mean[inverse]
    sq = torch.zeros(k, dtype=dtype, device=values.device).index_add_(0, inverse, dev * dev)
    denom = (size - 1).clamp_min(1.0) if unbiased else size
    std = torch.sqrt(sq / denom)
    std = torch.where(size > 1, std, torch.zeros_like(std))
    return mean[inverse], std[inverse], size[inverse]


def result_dtype(rewards: Tensor) -> torch.dtype:
    """The dtype of an advantage tensor computed from ``rewards``: float64 if they are float64, else float32.

    The outcome-reward estimators (``grpo``, ``rloo``, ``opo``, ``reinforce_pp``) compute their
    statistics in float64 and return this dtype.

    Example:
        >>> result_dtype(torch.tensor([1.0], dtype=torch.float64)), result_dtype(torch.tensor([1.0]))
        (torch.float64, torch.float32)
    """
    return torch.float64 if rewards.dtype == torch.float64 else torch.float32


def broadcast_to_tokens(scores: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Broadcast one advantage per completion over its tokens: ``A[i, t] = A_i * mask[i, t]``.

    The product is taken in float64 and is exactly 0 where the mask is 0, even where ``A_i`` is not
    finite (``where``, not a multiplication, zeroes those positions).

    Args:
        scores: ``[B]`` per-completion advantages ``A_i``.
        mask: ``[B, T]``, 1 where a token is trained on.
        dtype: Dtype of the result (see :func:`result_dtype`).

    Returns:
        ``[B, T]`` advantages of ``dtype``.

    Example:
        >>> broadcast_to_tokens(torch.tensor([2.0, -1.0]), torch.tensor([[1, 1, 0], [1, 0, 0]]), torch.float32)
        tensor([[ 2.,  2.,  0.],
                [-1.,  0.,  0.]])
    """
    m = mask.to(torch.float64)
    return torch.where(m > 0, scores.to(torch.float64)[:, None] * m, 0.0).to(dtype)


def kl_estimate(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    estimator: str = "k3",
    input_clamp: float | None = 20.0,
    output_clamp: float | None = 10.0,
) -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from ``x = logprobs - ref_logprobs``.

    - ``k1``: ``x``;  ``abs``: ``|x|``;  ``k2``: ``x**2 / 2``;
    - ``k3`` (low-variance KL): ``exp(-x) + x - 1``, computed as ``expm1(-x) + x`` so that it keeps
      its digits near ``x = 0`` and is never negative (the form as written cancels to ``-1e-16``);
    - ``<name>+`` (straight-through, verl's documented intent): the value of ``<name>`` with the
      gradient of ``k2``: ``k2 - sg[k2] + sg[k_name]``.

    ``x`` is clamped to ``[-input_clamp, input_clamp]`` first and the result to
    ``[-output_clamp, output_clamp]`` (verl and NeMo RL: 20 and 10; pass None to disable, as TRL).
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; valid: {', '.join(KL_ESTIMATORS)}")
    x = logprobs - ref_logprobs
    if input_clamp is not None:
        x = x.clamp(-input_clamp, input_clamp)
    base = estimator.rstrip("+")
    if base == "k1":
        value = x
    elif base == "abs":
        value = x.abs()
    elif base == "k2":
        value = 0.5 * x * x
    else:
        value = torch.expm1(-x) + x
    if output_clamp is not None:
        value = value.clamp(-output_clamp, output_clamp)
    if estimator.endswith("+"):
        k2 = 0.5 * x * x
        value = k2 - k2.detach() + value.detach()
    return value
