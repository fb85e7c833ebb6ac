"""Runtime checks at the component boundaries: what a plugin's component returns is checked against its
contract before the trainer uses it.

Each check raises :class:`~rlsdk.errors.ComponentError` with one line that names the component (kind,
name and the plugin that registered it, e.g. ``reward 'my_score' (plugin my-dist:my_plugin)``), what it
returned and what the contract expects. :func:`rlsdk.errors.guard` does the same for an exception a component
raises, so a plugin author's mistake never shows as a traceback inside rlsdk (``--debug`` shows it).

The checks read only what is already on the CPU, or one scalar per optimiser step, so they cost
nothing measurable.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from rlsdk.errors import ComponentError
from rlsdk.types import Example, LossOutput, RolloutBatch

__all__ = ["check_examples", "check_rollout", "check_rewards", "check_advantages", "check_loss_output"]


def _short(value: Any, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def check_examples(examples: Any, requested: int | None, component: str, call: str) -> list[Example]:
    """A task's examples: a non-empty list of :class:`~rlsdk.Example` (``requested`` of them if given)."""
    if not isinstance(examples, Sequence) or isinstance(examples, (str, bytes)):
        raise ComponentError(f"{component} returned {_short(examples)} from {call}; expected a list of rlsdk.Example")
    if not examples:
        raise ComponentError(f"{component} returned no examples from {call}; does the task's data hold any?")
    if requested is not None and len(examples) != requested:
        raise ComponentError(f"{component} returned {len(examples)} examples from {call}; {requested} were requested")
    for i, example in enumerate(examples):
        if (
            not isinstance(example, Example)
            or not isinstance(example.prompt, str)
            or not isinstance(example.answer, str)
        ):
            raise ComponentError(
                f"{component} returned {_short(example)} as example {i} from {call}; expected "
                "rlsdk.Example(prompt: str, answer: str)"
            )
    return list(examples)


def check_rollout(batch: Any, examples: int, component: str) -> RolloutBatch:
    """A sampler's result: a scored :class:`~rlsdk.RolloutBatch` whose fields agree in size."""
    call = "sampler(engine, examples, score, generator, params)"
    if not isinstance(batch, RolloutBatch):
        raise ComponentError(f"{component} returned {_short(batch)} from {call}; expected an rlsdk.RolloutBatch")
    b, t = batch.mask.shape
    if b < examples:
        raise ComponentError(
            f"{component} returned {b} completions for {examples} prompts; expected at least one per prompt"
        )
    if batch.sequences is None or batch.attention_mask is None:
        raise ComponentError(
            f"{component} returned a RolloutBatch without sequences or attention_mask; the trainer needs both"
        )
    if batch.sequences.dim() != 2 or batch.sequences.shape[0] != b or batch.sequences.shape[1] < t:
        raise ComponentError(
            f"{component} returned sequences {tuple(batch.sequences.shape)} for mask {(b, t)}; "
            "expected [B, S] with S >= T"
        )
    if batch.attention_mask.shape != batch.sequences.shape:
        raise ComponentError(
            f"{component} returned attention_mask {tuple(batch.attention_mask.shape)} for sequences "
            f"{tuple(batch.sequences.shape)}; they must have the same shape"
        )
    if len(batch.completions) != b or len(batch.prompts) != b:
        raise ComponentError(
            f"{component} returned {len(batch.prompts)} prompts and {len(batch.completions)} completions for {b} rows"
        )
    if not bool(torch.isfinite(batch.rewards).all()):
        raise ComponentError(
            f"{component} returned non-finite rewards; score the batch with the score function it is given"
        )
    return batch


def check_rewards(values: Any, completions: Sequence[str], component: str) -> Tensor:
    """A reward's values: one finite number per completion, as a float32 tensor ``[B]``.

    Numbers and bools are accepted (``True`` is 1.0); strings, None and NaN are not.
    """
    n = len(completions)
    expected = f"a reward returns a list of {n} floats, one per completion"
    if isinstance(values, Tensor):
        if values.dim() > 1:
            raise ComponentError(f"{component} returned a tensor of shape {tuple(values.shape)}; {expected}")
        values = values.detach().cpu().reshape(-1).tolist()
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
        raise ComponentError(f"{component} returned {_short(values)}; {expected}")
    if len(values) != n:
        raise ComponentError(f"{component} returned {len(values)} values for {n} completions; {expected}")
    out = []
    for i, value in enumerate(values):
        number = _as_number(value)
        if number is None:
            raise ComponentError(
                f"{component} returned {_short(value)} ({type(value).__name__}) for completion {i}; rewards are numbers"
            )
        if not math.isfinite(number):
            raise ComponentError(
                f"{component} returned {number} for completion {i} ({_short(completions[i], 40)}); "
                "rewards must be finite"
            )
        out.append(number)
    return torch.tensor(out, dtype=torch.float32)


def _as_number(value: Any) -> float | None:
    """``float(value)`` for a real number (a bool, a NumPy scalar, a one-element tensor), else None;
    a string is not a number here even if ``float`` could parse it."""
    if isinstance(value, (str, bytes, complex)) or value is None or (isinstance(value, Tensor) and value.numel() != 1):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def check_advantages(advantages: Any, mask: Tensor, component: str) -> Tensor:
    """An advantage estimator's result: a floating tensor shaped like ``mask``, finite where it is positive."""
    call = "advantage(batch)"
    if not isinstance(advantages, Tensor):
        raise ComponentError(f"{component} returned {_short(advantages)} from {call}; expected a tensor [B, T]")
    if advantages.shape != mask.shape:
        raise ComponentError(
            f"{component} returned advantages of shape {tuple(advantages.shape)} from {call}; expected the mask's "
            f"shape {tuple(mask.shape)} [B, T]"
        )
    if not advantages.is_floating_point():
        raise ComponentError(f"{component} returned advantages of dtype {advantages.dtype}; expected floating point")
    if not bool(torch.isfinite(advantages[mask.to(advantages.device) > 0]).all()):
        raise ComponentError(f"{component} returned non-finite advantages on trained tokens (mask > 0)")
    return advantages


def check_loss_output(out: Any, component: str) -> LossOutput:
    """A loss's result: ``LossOutput(loss=<0-dim tensor with gradient>, metrics={name: number | 0-dim tensor})``.

    Finiteness is checked once per optimiser step by the trainer (it needs the value, a device sync).
    """
    if not isinstance(out, LossOutput):
        raise ComponentError(
            f"{component} returned {_short(out)}; "
            "a loss returns rlsdk.LossOutput(loss=<scalar tensor>, metrics={...})"
        )
    loss = out.loss
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        shape = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else _short(loss)
        raise ComponentError(f"{component} returned LossOutput.loss = {shape}; expected a scalar (0-dim) tensor")
    if not loss.requires_grad:
        raise ComponentError(
            f"{component} returned a loss without gradient (computed from detached values?); "
            "it must depend on the logprobs"
        )
    if not isinstance(out.metrics, dict):
        raise ComponentError(
            f"{component} returned LossOutput.metrics = {_short(out.metrics)}; expected a dict of numbers"
        )
    for key, value in out.metrics.items():
        ok = value.numel() == 1 if isinstance(value, Tensor) else isinstance(value, numbers.Real)
        if not ok:
            raise ComponentError(
                f"{component} returned metric {key!r} = {_short(value)}; metrics are numbers or 0-dim tensors"
            )
    return out
