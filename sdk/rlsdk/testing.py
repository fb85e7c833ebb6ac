"""rlsdk.testing: pytest fixtures and conformance checks for plugin authors.

Installing rlsdk registers this module as a pytest plugin (the ``pytest11`` entry point), so the
tests of any plugin package get its fixtures with no configuration. The ``check_*`` functions are
plain functions: call them from a test, a notebook or a script. Each returns None when the component
conforms and raises ``AssertionError`` naming the component and the property it broke.

===============================  ===================================================================
check                            what it verifies
===============================  ===================================================================
:func:`check_loss`               ``LossOutput`` with a finite scalar loss and finite metrics;
                                 gradient finite and exactly 0 at masked positions; values at masked
                                 positions ignored; inputs unchanged; deterministic; the same loss
                                 and gradient when the batch is split into 1, 2 or 4 micro-batches
:func:`check_advantage`          ``[B, T]`` floating, finite, exactly 0 where the mask is 0; inputs
                                 unchanged; deterministic; masked old/ref log-probs ignored
:func:`check_reward`             one finite number per completion; deterministic; inputs unchanged
:func:`check_sampler`            a scored ``RolloutBatch`` with consistent shapes, groups and texts;
                                 ``temperature`` and ``max_new_tokens``; reproducible from the
                                 generator
:func:`check_task`               examples drawn only from the generator; a fixed eval set
:func:`check_logprob_backend`    log-probs, entropies and gradients match a float64 reference
===============================  ===================================================================

Fixtures (all CPU, tiny, seeded): ``rlsdk_registry`` (a factory: ``rlsdk_registry(my_plugin)`` is
:func:`make_registry`), ``rlsdk_train_batch`` (:func:`make_train_batch`), ``rlsdk_rollout_batch``
(:func:`make_rollout_batch`), ``rlsdk_policy`` (:func:`make_policy`) and ``rlsdk_examples``
(:func:`make_examples`).

A plugin package's ``tests/test_my_plugin.py`` (after ``pip install rlsdk`` and ``pip install -e .``)::

    import rlsdk
    import rlsdk.testing
    import my_rlsdk_plugin


    def test_discovered_through_the_entry_point():
        assert "my_loss" in rlsdk.get_registry(refresh=True).names("loss")


    def test_loss_conforms(rlsdk_registry):
        loss = rlsdk_registry(my_rlsdk_plugin).create("loss", "my_loss")
        rlsdk.testing.check_loss(loss)


    def test_loss_on_my_batch(rlsdk_registry, rlsdk_train_batch):
        loss = rlsdk_registry(my_rlsdk_plugin).create("loss", "my_loss", {"agg": "seq-mean-token-sum"})
        rlsdk.testing.check_loss(loss, rlsdk_train_batch)

:func:`make_registry` holds rlsdk's own reference plugins plus the plugins given, and no other
installed plugin, so a test sees exactly the components it names. This module imports torch and
rlsdk only inside its functions: loading it costs a pytest session nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn

try:
    import pytest
except ImportError:  # pragma: no cover - the check functions work without pytest
    pytest = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from rlsdk.plugins import Registry
    from rlsdk.types import Example, LossOutput, RolloutBatch, TrainBatch

__all__ = [
    "make_registry",
    "make_train_batch",
    "make_rollout_batch",
    "make_policy",
    "make_examples",
    "check_loss",
    "check_advantage",
    "check_reward",
    "check_sampler",
    "check_task",
    "check_logprob_backend",
]

#: Micro-batch counts :func:`check_loss` compares against the whole batch.
MICRO_BATCH_SPLITS = (1, 2, 4)
#: Relative tolerance of the micro-batch invariance checks.
RTOL = 1e-5


# --------------------------------------------------------------------------------------------------
# Helpers


def _label(kind: str, component: Any) -> str:
    """``"loss ClippedPG"``: the kind and the class (or function) name of ``component``."""
    name = getattr(component, "__name__", None) or type(component).__name__
    return f"{kind} {name}"


def _fail(kind: str, component: Any, prop: str, detail: str) -> NoReturn:
    """Raise ``AssertionError("<kind> <Name>: <prop>: <detail>")``."""
    raise AssertionError(f"{_label(kind, component)}: {prop}: {detail}")


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run the block with the global torch RNG seeded to ``seed``, restoring its state afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _only_core_entry_points() -> Iterator[None]:
    """Temporarily set ``RLSDK_LOAD_PLUGINS=""``: entry points of the ``rlsdk`` distribution only."""
    old = os.environ.get("RLSDK_LOAD_PLUGINS")
    os.environ["RLSDK_LOAD_PLUGINS"] = ""
    try:
        yield
    finally:
        if old is None:
            del os.environ["RLSDK_LOAD_PLUGINS"]
        else:
            os.environ["RLSDK_LOAD_PLUGINS"] = old


def _same(a: Tensor, b: Tensor) -> bool:
    """Exact equality of two tensors (shape, dtype and values; NaN equals NaN)."""
    import torch

    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())
    return torch.equal(a, b)


def _equal(a: Any, b: Any) -> bool:
    """Deep equality of plain values that may hold tensors (in lists, tuples and dicts)."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and _same(a.detach(), b.detach())
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _max_diff(a: Tensor, b: Tensor) -> float:
    """Largest absolute difference of two tensors of the same shape (0 when empty)."""
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


def _close(a: Tensor, b: Tensor, rtol: float = RTOL, atol: float = 1e-7) -> bool:
    """``|a - b| <= atol + rtol * max|b|`` everywhere (a tolerance scaled by the reference's size)."""
    if a.shape != b.shape:
        return False
    scale = float(b.detach().double().abs().max()) if b.numel() else 0.0
    return _max_diff(a.detach(), b.detach()) <= atol + rtol * scale


def _first_position(flags: Tensor) -> str:
    """``"row 1, position 3"`` of the first True in a ``[B, T]`` bool tensor."""
    index = flags.nonzero()[0].tolist()
    return ", ".join(f"{axis} {i}" for axis, i in zip(("row", "position"), index))


class _Snapshot:
    """Copies of a component's inputs, to detect in-place changes, mutation and reassignment.

    Tensors are compared by value and by their ``_version`` counter (which every in-place operation
    bumps, even one that writes the same values); other values (lists, dicts) by equality with a copy
    taken before the call.
    """

    def __init__(self, values: dict[str, Any]):
        import copy

        import torch

        self.entries: list[tuple[str, Any, Any, int | None]] = []
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                self.entries.append((name, value, value.detach().clone(), value._version))
            else:
                self.entries.append((name, value, copy.deepcopy(value), None))

    def check(self, kind: str, component: Any, current: dict[str, Any]) -> None:
        """Fail if any value recorded was changed; ``current`` holds the same names now."""
        for name, value, saved, version in self.entries:
            if current[name] is not value:
                _fail(kind, component, "input modified", f"{name} was replaced by another object")
            if version is not None:
                if value._version != version or not _same(value.detach(), saved):
                    _fail(
                        kind, component, "input modified in place",
                        f"tensor {name} was changed in place (clone it before changing it)",
                    )
            elif not _equal(value, saved):
                _fail(kind, component, "input modified", f"{name} was mutated: {saved!r:.80} -> {value!r:.80}")


def _fields(batch: Any) -> dict[str, Any]:
    """Field name -> value of a dataclass instance (the same objects, not copies)."""
    return {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}


@functools.lru_cache(maxsize=1)
def _builtins() -> Registry:
    """A cached registry of rlsdk's own plugins, for the default policy and examples."""
    return make_registry()


# --------------------------------------------------------------------------------------------------
# Builders


def make_registry(*plugins: Any, builtins: bool = True) -> Registry:
    """A fresh registry with rlsdk's reference plugins and ``plugins``, and no other installed plugin.

    Args:
        *plugins: Plugins to register: modules, objects with hook implementations, or paths of
            ``.py`` files.
        builtins: Include rlsdk's own plugins (the ``rlsdk`` entry points of the ``rlsdk``
            distribution). With False the registry holds ``plugins`` alone.

    Returns:
        A :class:`rlsdk.plugins.Registry`; ``registry.create(kind, name, options)`` builds a component.
    """
    from rlsdk.plugins import Registry, get_plugin_manager

    with _only_core_entry_points():
        pm, infos = get_plugin_manager(load_entrypoints=builtins, extra=plugins)
        return Registry(pm, infos)


def _ragged_mask(rows: int, length: int, generator: torch.Generator) -> Tensor:
    """``[rows, length]`` right-padded mask with random lengths, one empty row and one full row.

    With at least 3 rows and 3 columns, row 2 also has a hole (a masked token between valid ones,
    as a tool observation in a multi-turn completion).
    """
    import torch

    lengths = torch.randint(1, length + 1, (rows,), generator=generator)
    lengths[0] = length
    if rows > 1:
        lengths[1] = 0
    mask = (torch.arange(length)[None, :] < lengths[:, None]).float()
    if rows > 2 and length > 2:
        mask[2] = 1.0
        mask[2, 1] = 0.0
    return mask


def make_train_batch(
    seed: int = 0,
    rows: int = 8,
    length: int = 6,
    *,
    group_size: int = 4,
    ref_logprobs: bool = True,
    entropy: bool = False,
) -> TrainBatch:
    """A seeded tiny CPU :class:`rlsdk.TrainBatch` (float32), its own global batch.

    The mask is ragged: row 0 is full, row 1 empty, row 2 has a hole, the others have random
    lengths. ``advantages`` are random on valid tokens and 0 elsewhere (as an estimator returns);
    ``old_logprobs`` and ``ref_logprobs`` are random negative numbers everywhere (padding holds
    values too, which a loss must ignore).

    Args:
        seed: Seed of every random value.
        rows: ``B``.
        length: ``T``.
        group_size: Rows per group: ``group_ids = arange(B) // group_size``.
        ref_logprobs: Fill ``ref_logprobs`` (else None).
        entropy: Fill ``entropy`` with a leaf tensor that requires grad, as the trainer does for a
            loss with ``needs_entropy``.

    Returns:
        The batch.

    Example:
        >>> batch = make_train_batch(rows=4, length=5)
        >>> tuple(batch.mask.shape), batch.mask[1].sum().item(), batch.num_rows
        ((4, 5), 0.0, 4.0)
    """
    import torch

    from rlsdk.types import TrainBatch

    if rows < 1 or length < 1 or group_size < 1:
        raise ValueError(
            f"make_train_batch: rows, length and group_size must be >= 1, got {rows}, {length}, {group_size}"
        )
    g = torch.Generator().manual_seed(seed)
    mask = _ragged_mask(rows, length, g)
    old = -3.0 * torch.rand(rows, length, generator=g) - 0.05
    ref = old + 0.2 * torch.randn(rows, length, generator=g)
    return TrainBatch(
        mask=mask,
        advantages=torch.randn(rows, length, generator=g) * mask,
        old_logprobs=old,
        ref_logprobs=ref if ref_logprobs else None,
        rewards=torch.rand(rows, generator=g),
        group_ids=torch.arange(rows) // group_size,
        entropy=(2.0 * torch.rand(rows, length, generator=g)).requires_grad_(True) if entropy else None,
    )


_DIGITS = "0123456789"


def make_rollout_batch(seed: int = 0, groups: int = 2, group_size: int = 4, length: int = 6) -> RolloutBatch:
    """A seeded tiny scored :class:`rlsdk.RolloutBatch` on the CPU, as a sampler and the trainer make it.

    ``B = groups * group_size`` rows with a ragged mask (row 0 full, row 1 empty, row 2 with a hole),
    random rewards in [0, 1), ``sequences [B, 3 + T]`` (left-padded prompts of the tiny policy's
    alphabet, then the completion), texts and metadata (``answer`` and ``completion_tokens``), and
    random ``old_logprobs`` and ``ref_logprobs`` (present at masked positions too).

    Args:
        seed: Seed of every random value.
        groups: Number of prompts.
        group_size: Completions per prompt.
        length: ``T``.

    Returns:
        The batch.

    Example:
        >>> batch = make_rollout_batch(groups=3, group_size=2)
        >>> batch.group_ids.tolist(), len(batch.completions)
        ([0, 0, 1, 1, 2, 2], 6)
    """
    import torch

    from rlsdk.types import RolloutBatch

    if groups < 1 or group_size < 1 or length < 1:
        raise ValueError(
            f"make_rollout_batch: groups, group_size and length must be >= 1, got {groups}, {group_size}, {length}"
        )
    g = torch.Generator().manual_seed(seed)
    rows = groups * group_size
    mask = _ragged_mask(rows, length, g)
    prompt_len = 3
    group_ids = torch.arange(groups).repeat_interleave(group_size)
    prompt_digits = torch.randint(0, 10, (groups, prompt_len), generator=g).tolist()
    prompt_texts = ["rev " + "".join(_DIGITS[d] for d in row) + "=" for row in prompt_digits]
    answers = ["".join(_DIGITS[d] for d in reversed(row)) for row in prompt_digits]
    tokens = torch.randint(0, 10, (rows, length), generator=g)
    completions = ["".join(_DIGITS[int(t)] for t, m in zip(tokens[i], mask[i]) if m > 0) for i in range(rows)]
    # Token ids as the tiny character-level policy numbers them: 0 pad, 1 eos, 2.. its alphabet.
    prompt_ids = torch.randint(2, 12, (rows, prompt_len), generator=g)
    prompt_attn = torch.ones(rows, prompt_len, dtype=torch.long)
    prompt_attn[::2, 0] = 0  # every other prompt is one token shorter, left-padded
    prompt_ids = torch.where(prompt_attn > 0, prompt_ids, 0)
    completion_ids = torch.where(mask > 0, tokens + 2, 0)
    lengths = mask.sum(-1)
    rewards = torch.rand(rows, generator=g)
    old = -3.0 * torch.rand(rows, length, generator=g) - 0.05
    return RolloutBatch(
        rewards=rewards,
        group_ids=group_ids,
        mask=mask,
        sequences=torch.cat([prompt_ids, completion_ids], dim=1),
        attention_mask=torch.cat([prompt_attn, mask.long()], dim=1),
        prompts=[prompt_texts[int(i)] for i in group_ids],
        completions=completions,
        metadata=[{"answer": answers[int(i)], "completion_tokens": int(n)} for i, n in zip(group_ids, lengths)],
        truncated=lengths >= length,
        reward_components={"conformance": rewards.clone()},
        old_logprobs=old,
        ref_logprobs=old + 0.2 * torch.randn(rows, length, generator=g),
    )


def make_policy(seed: int = 0, **options: Any) -> Any:
    """A tiny ``tiny`` policy (``d_model=16``, one layer, two heads) initialised from ``seed``, in eval mode.

    Args:
        seed: Seed of the weight initialisation (the global torch RNG is restored afterwards).
        **options: Options of the ``tiny`` policy overriding the small defaults.

    Returns:
        The policy (an ``nn.Module`` with a ``tokenizer``).
    """
    with _seeded(seed):
        policy = _builtins().create("policy", "tiny", {"d_model": 16, "n_layers": 1, "n_heads": 2, **options})
    return policy.eval()


def make_examples(seed: int = 0, n: int = 3) -> list[Example]:
    """``n`` distinct examples of the ``reverse`` task (3 digits), drawn with ``seed``.

    Args:
        seed: Seed of the draw.
        n: Number of examples (at most 500).

    Returns:
        Examples with distinct prompts.
    """
    import torch

    if not 0 <= n <= 500:
        raise ValueError(f"make_examples: n must be in [0, 500], got {n}")
    task = _builtins().create("task", "reverse", {"eval_size": 0})
    generator = torch.Generator().manual_seed(seed)
    examples: dict[str, Example] = {}
    while len(examples) < n:
        for example in task.sample(n - len(examples), generator):
            examples.setdefault(example.prompt, example)
    return list(examples.values())


# --------------------------------------------------------------------------------------------------
# Losses


def _current_logprobs(batch: TrainBatch, seed: int) -> Tensor:
    """Log-probabilities of a policy a little off the sampling one: ``old + 0.3 * noise`` (some clipping)."""
    import torch

    g = torch.Generator().manual_seed(seed + 7919)
    noise = torch.randn(batch.old_logprobs.shape, generator=g).to(batch.old_logprobs)
    return (batch.old_logprobs.detach() + 0.3 * noise).clamp_max(0.0)


def _loss_run(
    loss: Any, logprobs: Tensor, batch: TrainBatch, seed: int, watch_inputs: bool = False
) -> tuple[LossOutput, Tensor, Tensor | None]:
    """Call ``loss`` once (global RNG seeded); return its output and the gradients to logprobs and entropy.

    With ``watch_inputs``, fail if the call changed ``logprobs`` or the batch.
    """
    from rlsdk.types import LossOutput

    lp = logprobs.detach().clone().requires_grad_(True)
    snapshot = _Snapshot({"logprobs": lp, **_fields(batch)}) if watch_inputs else None
    with _seeded(seed):
        out = loss(lp, batch)
    if snapshot is not None:
        snapshot.check("loss", loss, {"logprobs": lp, **_fields(batch)})
    if not isinstance(out, LossOutput):
        _fail("loss", loss, "return type", f"returned {type(out).__name__}; return rlsdk.LossOutput(loss, metrics)")
    grad_lp, grad_ent = _loss_grads(loss, out.loss, lp, batch)
    return out, grad_lp, grad_ent


def _loss_grads(loss: Any, value: Any, lp: Tensor, batch: TrainBatch) -> tuple[Tensor, Tensor | None]:
    """Check ``value`` is a finite differentiable scalar; its gradients w.r.t. ``lp`` and ``batch.entropy``."""
    import torch

    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        _fail("loss", loss, "scalar loss", f"LossOutput.loss must be a 0-dim tensor, got {shape}")
    if not value.is_floating_point():
        _fail("loss", loss, "dtype", f"LossOutput.loss has dtype {value.dtype}; expected a floating dtype")
    if not bool(torch.isfinite(value)):
        _fail("loss", loss, "finite loss", f"LossOutput.loss is {float(value.detach())}")
    if not value.requires_grad:
        _fail("loss", loss, "gradient", "LossOutput.loss does not depend on logprobs (no gradient flows to them)")
    entropy = batch.entropy if batch.entropy is not None and batch.entropy.requires_grad else None
    inputs = [lp] if entropy is None else [lp, entropy]
    grads = torch.autograd.grad(value, inputs, allow_unused=True)
    if grads[0] is None:
        _fail("loss", loss, "gradient", "LossOutput.loss does not depend on logprobs (no gradient flows to them)")
    grad_ent = grads[1] if entropy is not None else None
    if entropy is not None and grad_ent is None and getattr(loss, "needs_entropy", False):
        _fail("loss", loss, "gradient", "needs_entropy is True but no gradient flows to batch.entropy")
    return grads[0], grad_ent


def _metric_floats(loss: Any, metrics: Any) -> dict[str, float]:
    """``metrics`` as python floats, after checking each is a finite float or a detached 0-dim float tensor."""
    import torch

    if not isinstance(metrics, dict):
        _fail("loss", loss, "metrics", f"LossOutput.metrics must be a dict, got {type(metrics).__name__}")
    values = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            _fail("loss", loss, "metrics", f"metric name {key!r} is not a string")
        is_tensor = isinstance(value, torch.Tensor)
        if is_tensor and (value.dim() != 0 or not value.is_floating_point() or value.requires_grad):
            _fail(
                "loss", loss, "metrics",
                f"metric {key!r} is a tensor of shape {tuple(value.shape)}, dtype {value.dtype}, requires_grad "
                f"{value.requires_grad}; a tensor metric must be 0-dim, floating and detached (x.detach())",
            )
        if not is_tensor and (isinstance(value, bool) or not isinstance(value, (int, float))):
            _fail(
                "loss", loss, "metrics",
                f"metric {key!r} is a {type(value).__name__}; metrics are python floats or detached 0-dim tensors",
            )
        values[key] = float(value)
        if not math.isfinite(values[key]):
            _fail("loss", loss, "metrics", f"metric {key!r} is {values[key]}")
    return values


def _check_loss_output(loss: Any, out: LossOutput, grad_lp: Tensor, grad_ent: Tensor | None, mask: Tensor) -> None:
    """Metrics are finite floats (see :func:`_metric_floats`); gradients are finite and exactly 0 where ``mask`` is 0."""
    import torch

    _metric_floats(loss, out.metrics)
    masked = mask <= 0
    for name, grad in (("logprobs", grad_lp), ("batch.entropy", grad_ent)):
        if grad is None:
            continue
        if not bool(torch.isfinite(grad).all()):
            bad = ~torch.isfinite(grad)
            _fail(
                "loss", loss, "finite gradient",
                f"the gradient w.r.t. {name} is {float(grad[bad][0])} at {_first_position(bad)}",
            )
        if bool((grad[masked] != 0).any()):
            bad = masked & (grad != 0)
            _fail(
                "loss", loss, "masked positions",
                f"the gradient w.r.t. {name} is {float(grad[bad][0]):.3g} at masked {_first_position(bad)}; "
                "it must be exactly 0 where batch.mask is 0",
            )


def _perturb_masked(batch: TrainBatch, logprobs: Tensor, seed: int) -> tuple[TrainBatch, Tensor]:
    """The batch and logprobs with different finite values at every masked position."""
    import torch

    g = torch.Generator().manual_seed(seed + 104729)
    masked = batch.mask <= 0

    def shift(t: Tensor) -> Tensor:
        noise = torch.randn(t.shape, generator=g).to(t) + 0.5
        return torch.where(masked, t.detach() + noise, t.detach())

    changes: dict[str, Any] = {"advantages": shift(batch.advantages), "old_logprobs": shift(batch.old_logprobs)}
    if batch.ref_logprobs is not None:
        changes["ref_logprobs"] = shift(batch.ref_logprobs)
    if batch.entropy is not None:
        changes["entropy"] = shift(batch.entropy).abs().requires_grad_(batch.entropy.requires_grad)
    return dataclasses.replace(batch, **changes), shift(logprobs).clamp_max(0.0)


def _check_micro_batches(
    loss: Any, batch: TrainBatch, logprobs: Tensor, whole: tuple[LossOutput, Tensor, Tensor | None], seed: int,
    additive_metrics: bool,
) -> None:
    """Sum the loss over ``batch.split(k)`` for each k in :data:`MICRO_BATCH_SPLITS`; compare with ``whole``."""
    import torch

    out, grad_lp, grad_ent = whole
    rows = batch.mask.shape[0]
    for k in MICRO_BATCH_SPLITS:
        if k > rows:
            continue
        lp = logprobs.detach().clone().requires_grad_(True)
        total = torch.zeros((), dtype=out.loss.dtype)
        metrics: dict[str, float] = {}
        start = 0
        for micro in batch.split(k):
            stop = start + micro.mask.shape[0]
            with _seeded(seed):
                part = loss(lp[start:stop], micro)
            total = total + part.loss
            for key, value in part.metrics.items():
                metrics[key] = metrics.get(key, 0.0) + float(value)
            start = stop
        g_lp, g_ent = _loss_grads(loss, total, lp, batch)
        hint = "normalise with the batch's global counts (rlsdk.aggregate), never with counts of the micro-batch"
        if not _close(total, out.loss, atol=1e-6):
            _fail(
                "loss", loss, "micro-batch invariance",
                f"the loss is {float(out.loss.detach()):.7g} on the whole batch but sums to "
                f"{float(total.detach()):.7g} over {k} "
                f"micro-batches (batch.split({k})); {hint}",
            )
        if not _close(g_lp, grad_lp, atol=1e-8):
            _fail(
                "loss", loss, "micro-batch invariance",
                f"the gradient w.r.t. logprobs differs by up to {_max_diff(g_lp, grad_lp):.3g} between the whole "
                f"batch and {k} micro-batches; {hint}",
            )
        if grad_ent is not None and g_ent is not None and not _close(g_ent, grad_ent, atol=1e-8):
            _fail(
                "loss", loss, "micro-batch invariance",
                f"the gradient w.r.t. batch.entropy differs by up to {_max_diff(g_ent, grad_ent):.3g} between the "
                f"whole batch and {k} micro-batches; {hint}",
            )
        if additive_metrics:
            for key, value in _metric_floats(loss, out.metrics).items():
                summed = metrics.get(key, 0.0)
                if abs(summed - value) > 1e-6 + 1e-4 * abs(value):
                    _fail(
                        "loss", loss, "micro-batch invariance",
                        f"metric {key!r} is {value:.6g} on the whole batch but sums to {summed:.6g} over {k} "
                        f"micro-batches; the trainer sums metrics over micro-batches, so {hint}",
                    )


def check_loss(loss: Any, batch: TrainBatch | None = None, seed: int = 0, *, additive_metrics: bool = False) -> None:
    """Check that ``loss`` honours the :class:`rlsdk.Loss` contract.

    ``loss(logprobs, batch)`` is called with ``logprobs = old_logprobs + 0.3 * noise`` (seeded, with
    gradient) and checked for:

    - the result: a :class:`rlsdk.LossOutput` holding a finite scalar loss with a floating dtype that
      depends on ``logprobs``, and a dict of finite metrics (python floats or detached 0-dim tensors);
    - gradients: finite, and exactly 0 at masked positions (w.r.t. ``logprobs`` and, when the batch
      has one with gradient, ``batch.entropy``);
    - masks respected: other values at masked positions of ``logprobs``, ``advantages``,
      ``old_logprobs``, ``ref_logprobs`` and ``entropy`` change neither the loss nor the gradient;
    - no in-place change to ``logprobs`` or the batch's tensors, and no reassigned batch field;
    - determinism: a second call (global RNG seeded with ``seed`` each time) gives the same loss,
      gradient and metrics, bit for bit;
    - micro-batch invariance: for ``k`` in 1, 2 and 4 the sum of the losses of ``batch.split(k)``
      (which keeps the global counts) and its gradient equal those of the whole batch (relative
      tolerance 1e-5). With ``additive_metrics`` the metrics must sum the same way;
    - for a loss that defines ``from_hidden`` (a fused kernel): on random hidden states and output
      weight, its loss, metrics and gradients w.r.t. both equal those of the ``torch`` logprob backend
      followed by the loss itself (relative tolerance 1e-4: the backend computes in float32).

    Args:
        loss: The loss component (e.g. ``registry.create("loss", "my_loss")``).
        batch: The global batch to test on; default :func:`make_train_batch` with ``ref_logprobs``
            when ``loss.needs_ref_logprobs`` and an ``entropy`` with gradient when ``loss.needs_entropy``.
        seed: Seed of the default batch, of ``logprobs`` and of the global RNG during each call.
        additive_metrics: Also require every metric to sum over micro-batches, as the trainer assumes.

    Raises:
        AssertionError: ``"loss <Name>: <property>: <details>"`` for the first property that fails.
        ValueError: ``batch`` lacks a field the loss declares it needs.
    """
    needs_ref = bool(getattr(loss, "needs_ref_logprobs", False))
    needs_entropy = bool(getattr(loss, "needs_entropy", False))
    if batch is None:
        batch = make_train_batch(seed, ref_logprobs=needs_ref, entropy=needs_entropy)
    elif needs_ref and batch.ref_logprobs is None:
        raise ValueError(
            f"check_loss: {_label('loss', loss)} sets needs_ref_logprobs but the batch given has no ref_logprobs"
        )
    elif needs_entropy and batch.entropy is None:
        raise ValueError(f"check_loss: {_label('loss', loss)} sets needs_entropy but the batch given has no entropy")
    logprobs = _current_logprobs(batch, seed)

    # The call itself: result, gradients, inputs untouched.
    out, grad_lp, grad_ent = _loss_run(loss, logprobs, batch, seed, watch_inputs=True)
    _check_loss_output(loss, out, grad_lp, grad_ent, batch.mask)

    # Determinism.
    again, grad_lp2, grad_ent2 = _loss_run(loss, logprobs, batch, seed)
    same = _same(again.loss.detach(), out.loss.detach()) and _same(grad_lp2, grad_lp)
    if not (same and _metric_floats(loss, again.metrics) == _metric_floats(loss, out.metrics)):
        _fail(
            "loss", loss, "deterministic",
            f"two calls on the same inputs gave loss {float(out.loss.detach()):.9g} and "
            f"{float(again.loss.detach()):.9g} "
            f"(gradient difference {_max_diff(grad_lp2, grad_lp):.3g}, metrics {out.metrics} vs {again.metrics})",
        )
    if grad_ent is not None and grad_ent2 is not None and not _same(grad_ent, grad_ent2):
        _fail(
            "loss", loss, "deterministic",
            "two calls on the same inputs gave different gradients w.r.t. batch.entropy",
        )

    # Values at masked positions must not matter.
    noisy_batch, noisy_lp = _perturb_masked(batch, logprobs, seed)
    noisy, grad_lp3, _ = _loss_run(loss, noisy_lp, noisy_batch, seed)
    valid = batch.mask > 0
    if not _close(noisy.loss, out.loss, atol=1e-6) or not _close(grad_lp3[valid], grad_lp[valid], atol=1e-8):
        _fail(
            "loss", loss, "masked positions",
            f"changing the values at masked positions (mask == 0) of logprobs and the batch changed the loss "
            f"from {float(out.loss.detach()):.7g} to {float(noisy.loss.detach()):.7g} (gradient difference "
            f"{_max_diff(grad_lp3[valid], grad_lp[valid]):.3g}); multiply by, or select with, batch.mask",
        )

    _check_micro_batches(loss, batch, logprobs, (out, grad_lp, grad_ent), seed, additive_metrics)
    if hasattr(loss, "from_hidden"):
        _check_from_hidden(loss, batch, seed)


def _check_from_hidden(loss: Any, batch: TrainBatch, seed: int) -> None:
    """``loss.from_hidden`` equals the ``torch`` logprob backend followed by ``loss`` (see :func:`check_loss`)."""
    import torch

    from rlsdk.plugins import get_registry

    rows, length = batch.mask.shape
    n, h, v, temperature = rows * length, 8, 13, 0.9
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g)
    weight = torch.randn(v, h, generator=g)
    targets = torch.randint(0, v, (n,), generator=g)
    backend = get_registry().create("logprob_backend", "torch", {})
    with torch.no_grad():  # old / reference log-probs near the current ones, so ratios are not all clipped
        current = backend(hidden, weight, targets, temperature=temperature).logprobs.view(rows, length)
    near = {
        "old_logprobs": current + 0.2 * torch.randn(rows, length, generator=g),
        "ref_logprobs": None if batch.ref_logprobs is None else current + 0.2 * torch.randn(rows, length, generator=g),
    }
    near = {k: v.to(batch.mask.dtype) if v is not None else None for k, v in near.items()}
    batch = dataclasses.replace(batch, entropy=None, **near)
    results = []
    for fused in (True, False):
        x, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        if fused:
            out = loss.from_hidden(x, w, targets, batch, temperature=temperature, backend=backend)[0]
        else:
            lp = backend(x, w, targets, temperature=temperature, with_entropy=True)
            needs_entropy = bool(getattr(loss, "needs_entropy", False))
            entropy = lp.entropy.view(rows, length) if needs_entropy else None
            out = loss(lp.logprobs.view(rows, length), dataclasses.replace(batch, entropy=entropy))
        grads = torch.autograd.grad(out.loss, [x, w], allow_unused=True)
        results.append((out, *(g if g is not None else torch.zeros_like(t) for g, t in zip(grads, (x, w)))))
    (fused_out, fx, fw), (out, ux, uw) = results
    loss_ok = _close(fused_out.loss.detach().double(), out.loss.detach().double(), rtol=1e-4, atol=1e-6)
    if not (loss_ok and _close(fx, ux, rtol=1e-4, atol=1e-6) and _close(fw, uw, rtol=1e-4, atol=1e-6)):
        _fail(
            "loss", loss, "from_hidden",
            f"from_hidden gave loss {float(fused_out.loss.detach()):.7g}, the torch backend then the loss "
            f"{float(out.loss.detach()):.7g} (gradient differences: hidden {_max_diff(fx, ux):.3g}, "
            f"weight {_max_diff(fw, uw):.3g})",
        )
    fused_metrics, metrics = _metric_floats(loss, fused_out.metrics), _metric_floats(loss, out.metrics)
    if list(fused_metrics) != list(metrics) or any(
        not math.isclose(fused_metrics[k], metrics[k], rel_tol=1e-4, abs_tol=1e-6) for k in metrics
    ):
        _fail("loss", loss, "from_hidden", f"metrics {fused_metrics} differ from {metrics}")


# --------------------------------------------------------------------------------------------------
# Advantage estimators


def check_advantage(estimator: Any, batch: RolloutBatch | None = None, seed: int = 0) -> None:
    """Check that ``estimator`` honours the :class:`rlsdk.AdvantageEstimator` contract.

    ``estimator(batch)`` must return a finite floating tensor shaped like ``batch.mask`` that is
    exactly 0 where the mask is 0, must not change the batch (in place or by reassigning a field),
    must give the same result twice (global RNG seeded with ``seed``), and must not depend on the
    values of ``old_logprobs`` and ``ref_logprobs`` at masked positions.

    Args:
        estimator: The advantage estimator (e.g. ``registry.create("advantage", "my_adv")``).
        batch: The scored rollout to test on; default :func:`make_rollout_batch` (which has
            ``old_logprobs`` and ``ref_logprobs``).
        seed: Seed of the default batch, of the perturbation and of the global RNG during each call.

    Raises:
        AssertionError: ``"advantage <Name>: <property>: <details>"`` for the first property that fails.
    """
    import torch

    if batch is None:
        batch = make_rollout_batch(seed)
    snapshot = _Snapshot(_fields(batch))
    with _seeded(seed):
        adv = estimator(batch)
    snapshot.check("advantage", estimator, _fields(batch))
    if not isinstance(adv, torch.Tensor):
        _fail("advantage", estimator, "return type", f"returned {type(adv).__name__}; expected a tensor [B, T]")
    if adv.shape != batch.mask.shape:
        _fail(
            "advantage", estimator, "shape",
            f"returned shape {tuple(adv.shape)}; expected mask's {tuple(batch.mask.shape)}",
        )
    if not adv.is_floating_point():
        _fail("advantage", estimator, "dtype", f"returned dtype {adv.dtype}; expected a floating dtype")
    if not bool(torch.isfinite(adv).all()):
        bad = ~torch.isfinite(adv)
        _fail("advantage", estimator, "finite", f"value {float(adv[bad][0])} at {_first_position(bad)}")
    masked = batch.mask <= 0
    if bool((adv[masked] != 0).any()):
        bad = masked & (adv != 0)
        _fail(
            "advantage", estimator, "masked positions",
            f"value {float(adv[bad][0]):.4g} at masked {_first_position(bad)}; advantages must be exactly 0 where "
            "mask is 0",
        )
    with _seeded(seed):
        again = estimator(batch)
    if not (isinstance(again, torch.Tensor) and _same(again, adv)):
        diff = _max_diff(again, adv) if isinstance(again, torch.Tensor) and again.shape == adv.shape else float("nan")
        _fail("advantage", estimator, "deterministic", f"two calls on the same batch differ by up to {diff:.3g}")

    g = torch.Generator().manual_seed(seed + 104729)
    changes = {}
    for name in ("old_logprobs", "ref_logprobs"):
        value = getattr(batch, name)
        if value is not None:
            noise = torch.randn(value.shape, generator=g).to(value) + 0.5
            changes[name] = torch.where(masked, value + noise, value)
    if changes:
        with _seeded(seed):
            perturbed = estimator(batch.replace(**changes))
        if not _close(perturbed, adv, rtol=1e-6, atol=1e-7):
            _fail(
                "advantage", estimator, "masked positions",
                f"changing {' and '.join(changes)} at masked positions changed the advantages by up to "
                f"{_max_diff(perturbed, adv):.3g}; ignore values where mask is 0",
            )


# --------------------------------------------------------------------------------------------------
# Rewards


def _default_reward_inputs() -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Four tiny digit-task rows (numeric answers, one empty completion) for :func:`check_reward`."""
    prompts = ["rev 123=", "rev 450=", "sort 321=", "7+8="]
    completions = ["321", " 054", "12x", ""]
    answers = ["321", "054", "123", "15"]
    metadata = [{"answer": a, "completion_tokens": len(c)} for a, c in zip(answers, completions)]
    return prompts, completions, metadata


def check_reward(
    reward: Any,
    prompts: list[str] | None = None,
    completions: list[str] | None = None,
    metadata: list[dict[str, Any]] | None = None,
) -> None:
    """Check that ``reward`` honours the :class:`rlsdk.Reward` contract.

    ``reward(prompts, completions, metadata)`` must return a list with one finite python number
    (float or int, not bool) per completion, the same list on a second call, and must leave its
    input lists and dicts unchanged.

    Args:
        reward: The reward component (e.g. ``registry.create("reward", "my_reward")``).
        prompts: Prompt strings; default four tiny digit-task prompts.
        completions: Completion strings, as many as ``prompts``; default ``["321", " 054", "12x", ""]``.
        metadata: One dict per completion; default ``{"answer": ..., "completion_tokens": len(c)}``
            with numeric answers.

    Raises:
        AssertionError: ``"reward <Name>: <property>: <details>"`` for the first property that fails.
    """
    default_p, default_c, default_m = _default_reward_inputs()
    prompts = default_p if prompts is None else prompts
    completions = default_c if completions is None else completions
    metadata = default_m if metadata is None else metadata
    if not len(prompts) == len(completions) == len(metadata):
        raise ValueError(
            f"check_reward: {len(prompts)} prompts, {len(completions)} completions and {len(metadata)} metadata "
            "dicts given; they must have the same length"
        )
    inputs = {"prompts": prompts, "completions": completions, "metadata": metadata}
    snapshot = _Snapshot(inputs)
    values = reward(prompts, completions, metadata)
    snapshot.check("reward", reward, inputs)
    if not isinstance(values, list):
        _fail("reward", reward, "return type", f"returned {type(values).__name__}; expected a list of floats")
    if len(values) != len(completions):
        _fail("reward", reward, "length", f"returned {len(values)} values for {len(completions)} completions")
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(
                "reward", reward, "return type",
                f"value {i} is {value!r} ({type(value).__name__}); expected a python float",
            )
        if not math.isfinite(value):
            _fail("reward", reward, "finite", f"value {i} is {value} (for completion {completions[i]!r})")
    again = reward(prompts, completions, metadata)
    if again != values:
        _fail("reward", reward, "deterministic", f"two calls on the same inputs gave {values} and {again}")


# --------------------------------------------------------------------------------------------------
# Samplers


def _conformance_score(completion: str) -> float:
    """The reward the recording score function gives: a deterministic function of the text."""
    return (len(completion) % 5) / 4.0


class _RecordingScore:
    """A ``ScoreFn`` that fills ``rewards`` with :func:`_conformance_score` and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, batch: RolloutBatch) -> RolloutBatch:
        import torch

        self.calls += 1
        rewards = torch.tensor([_conformance_score(c) for c in batch.completions], dtype=torch.float32)
        return batch.replace(rewards=rewards, reward_components={"conformance": rewards})


def _sample(sampler: Any, policy: Any, examples: list[Example], seed: int, global_seed: int) -> tuple[Any, int]:
    """Run ``sampler`` with a generator seeded ``seed`` and the global RNG seeded ``global_seed``."""
    import torch

    score = _RecordingScore()
    generator = torch.Generator().manual_seed(seed)
    with _seeded(global_seed):
        batch = sampler(policy, examples, score, generator)
    return batch, score.calls


def _check_rollout(sampler: Any, batch: Any, examples: list[Example]) -> None:
    """The structural checks of :func:`check_sampler` on one returned batch."""
    import torch

    from rlsdk.types import RolloutBatch

    if not isinstance(batch, RolloutBatch):
        _fail("sampler", sampler, "return type", f"returned {type(batch).__name__}; expected rlsdk.RolloutBatch")
    b, t = batch.mask.shape
    for name in ("prompts", "completions", "metadata"):
        if len(getattr(batch, name)) != b:
            _fail("sampler", sampler, "length", f"{name} has {len(getattr(batch, name))} entries for B = {b} rows")
    if not bool(((batch.mask == 0) | (batch.mask == 1)).all()):
        _fail("sampler", sampler, "mask", "mask holds values other than 0 and 1")
    if batch.sequences is None or batch.attention_mask is None:
        _fail("sampler", sampler, "sequences", "sequences and attention_mask must be filled ([B, P + T])")
    seq, attn = batch.sequences, batch.attention_mask
    if seq.dim() != 2 or seq.shape[0] != b or seq.shape[1] < t or attn.shape != seq.shape:
        _fail(
            "sampler", sampler, "sequences",
            f"sequences {tuple(seq.shape)} and attention_mask {tuple(attn.shape)} must both be [B, P + T] "
            f"with B = {b}, T = {t}",
        )
    if seq.is_floating_point():
        _fail("sampler", sampler, "sequences", f"sequences must hold integer token ids, got {seq.dtype}")
    if bool((batch.mask > attn[:, seq.shape[1] - t :]).any()):
        _fail("sampler", sampler, "sequences", "a trained completion token (mask 1) has attention_mask 0")
    max_new = getattr(sampler, "max_new_tokens", None)
    for name, value in (("temperature", getattr(sampler, "temperature", None)), ("max_new_tokens", max_new)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(
                "sampler", sampler, "attributes",
                f"sampler.{name} must be a number (the trainer reads it), got {value!r}",
            )
    if t > max_new:
        _fail("sampler", sampler, "length", f"completions have T = {t} tokens, more than max_new_tokens = {max_new}")
    expected = torch.tensor([_conformance_score(c) for c in batch.completions], dtype=torch.float32)
    if batch.rewards.shape != (b,) or not torch.allclose(batch.rewards.float(), expected):
        _fail("sampler", sampler, "scored", "rewards are not those of the score function: return score(batch)")
    answers = {ex.prompt: ex.answer for ex in examples}
    first_of_group: dict[int, str] = {}
    for i, (gid, prompt, meta) in enumerate(zip(batch.group_ids.tolist(), batch.prompts, batch.metadata)):
        if prompt not in answers:
            _fail("sampler", sampler, "prompts", f"row {i} has prompt {prompt!r}, which is none of the examples'")
        if not isinstance(meta, dict) or str(meta.get("answer")) != str(answers[prompt]):
            _fail(
                "sampler", sampler, "metadata",
                f"row {i}: metadata {meta!r} must hold the example's answer {answers[prompt]!r}",
            )
        if first_of_group.setdefault(gid, prompt) != prompt:
            _fail(
                "sampler", sampler, "group_ids",
                f"group {gid} mixes prompts {first_of_group[gid]!r} and {prompt!r}; group_ids must tie the "
                "completions of one example",
            )
    missing = set(answers) - set(batch.prompts)
    if missing:
        _fail("sampler", sampler, "prompts", f"no completion for example(s) {sorted(missing)}")
    if len(first_of_group) != len(examples):
        _fail(
            "sampler", sampler, "group_ids",
            f"{len(first_of_group)} distinct group_ids for {len(examples)} examples; use one group per example",
        )


def check_sampler(sampler: Any, policy: Any = None, examples: list[Example] | None = None, seed: int = 0) -> None:
    """Check that ``sampler`` honours the :class:`rlsdk.Sampler` contract.

    ``sampler(policy, examples, score, generator)`` is called with a recording ``score`` (reward: a
    function of the completion's text) and must return a scored :class:`rlsdk.RolloutBatch`: ``score``
    called, rewards the ones ``score`` gave; ``prompts``, ``completions`` and ``metadata`` of length
    ``B``; a binary mask ``[B, T]`` with ``T <= max_new_tokens``; integer ``sequences`` and an
    ``attention_mask`` ``[B, P + T]`` covering every trained token; ``group_ids`` with one group per
    example, tying completions of the same prompt, and each row's metadata holding its example's
    answer. The sampler must expose numeric ``temperature`` and ``max_new_tokens``, leave the
    policy's parameters and the examples unchanged, and give identical output for the same
    generator seed even when the global RNG differs.

    Args:
        sampler: The sampler (e.g. ``registry.create("sampler", "group", {"n": 2})``).
        policy: The policy to sample from; default :func:`make_policy`.
        examples: Examples with distinct prompts; default :func:`make_examples`.
        seed: Seed of the sampling generator and of the defaults.

    Raises:
        AssertionError: ``"sampler <Name>: <property>: <details>"`` for the first property that fails.
    """
    import torch

    policy = make_policy(seed) if policy is None else policy
    examples = make_examples(seed) if examples is None else examples
    named = list(policy.named_parameters()) if hasattr(policy, "named_parameters") else []
    params = {name: p.detach().clone() for name, p in named}
    snapshot = _Snapshot({"examples": examples})
    batch, calls = _sample(sampler, policy, examples, seed, global_seed=seed)
    snapshot.check("sampler", sampler, {"examples": examples})
    for name, p in named:
        if not torch.equal(p.detach(), params[name]):
            _fail("sampler", sampler, "policy unchanged", f"parameter {name} of the policy changed while sampling")
    if calls == 0:
        _fail("sampler", sampler, "scored", "the score function was never called; return score(batch)")
    _check_rollout(sampler, batch, examples)

    again, _ = _sample(sampler, policy, examples, seed, global_seed=seed + 1)
    same = (
        isinstance(again, type(batch))
        and again.mask.shape == batch.mask.shape
        and _same(again.mask, batch.mask)
        and _same(again.sequences, batch.sequences)
        and _same(again.group_ids, batch.group_ids)
        and again.completions == batch.completions
        and _same(again.rewards, batch.rewards)
    )
    if not same:
        _fail(
            "sampler", sampler, "deterministic",
            "the same generator seed gave different rollouts (with a different global RNG state); "
            "draw every random number from the `generator` argument",
        )


# --------------------------------------------------------------------------------------------------
# Tasks and logprob backends


def check_task(task: Any, seed: int = 0) -> None:
    """Check that ``task`` honours the :class:`rlsdk.Task` contract.

    ``task.sample(n, generator)`` must return ``n`` :class:`rlsdk.Example` (non-empty string prompts,
    string answers) determined by the generator alone (the same examples under a different global
    RNG state), and ``[]`` for ``n = 0``; ``task.eval_examples()`` must return a list of examples,
    the same on every call.

    Args:
        task: The task (e.g. ``registry.create("task", "my_task")``).
        seed: Seed of the generator.

    Raises:
        AssertionError: ``"task <Name>: <property>: <details>"`` for the first property that fails.
    """
    import torch

    from rlsdk.types import Example

    def draw(n: int, global_seed: int) -> Any:
        with _seeded(global_seed):
            return task.sample(n, torch.Generator().manual_seed(seed))

    first = draw(4, seed)
    if not isinstance(first, list) or len(first) != 4:
        _fail("task", task, "sample", f"sample(4, generator) returned {first!r:.100}; expected a list of 4 Examples")
    for i, example in enumerate(first):
        if not isinstance(example, Example):
            _fail("task", task, "sample", f"item {i} is a {type(example).__name__}; expected rlsdk.Example")
        if not isinstance(example.prompt, str) or not example.prompt or not isinstance(example.answer, str):
            _fail(
                "task", task, "sample",
                f"item {i} {example!r}: prompt must be a non-empty string and answer a string",
            )
    if draw(4, seed + 1) != first:
        _fail(
            "task", task, "deterministic",
            "the same generator seed gave different examples; draw only from `generator`",
        )
    if draw(0, seed) != []:
        _fail("task", task, "sample", "sample(0, generator) must return []")
    evals = task.eval_examples()
    if not isinstance(evals, list) or not all(isinstance(e, Example) for e in evals):
        _fail(
            "task", task, "eval_examples",
            f"eval_examples() returned {evals!r:.100}; expected a list of rlsdk.Example",
        )
    if task.eval_examples() != evals:
        _fail("task", task, "eval_examples", "eval_examples() returned different examples on a second call")


def check_logprob_backend(backend: Any) -> None:
    """Check a logprob backend against a float64 ``log_softmax`` reference on tiny random inputs.

    With ``s = hidden @ weight.T / temperature``: ``logprobs`` must equal ``log_softmax(s)[target]``
    and ``entropy`` (``with_entropy=True``) ``-sum_j p_j log p_j`` (float32, shape ``[N]``; entropy None
    without ``with_entropy``), gradients w.r.t. ``hidden`` and ``weight`` must be finite and match the
    reference's, and the inputs must be unchanged.

    Args:
        backend: The backend (e.g. ``registry.create("logprob_backend", "my_backend")``).

    Raises:
        AssertionError: ``"logprob_backend <Name>: <property>: <details>"`` for the first property that fails.
    """
    import torch

    from rlsdk.types import LogprobOutput

    kind = "logprob_backend"
    g = torch.Generator().manual_seed(0)
    n, h, v, temperature = 7, 8, 13, 0.7
    hidden = torch.randn(n, h, generator=g)
    weight = torch.randn(v, h, generator=g)
    targets = torch.randint(0, v, (n,), generator=g)
    weights_lp, weights_ent = torch.randn(n, generator=g), torch.randn(n, generator=g)

    def reference(with_entropy: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        hd, wd = hidden.double().requires_grad_(True), weight.double().requires_grad_(True)
        log_p = torch.log_softmax(hd @ wd.T / temperature, dim=-1)
        lp = log_p.gather(-1, targets[:, None]).squeeze(-1)
        ent = -(log_p.exp() * log_p).sum(-1)
        total = (lp * weights_lp).sum() + ((ent * weights_ent).sum() if with_entropy else 0.0)
        grad_h, grad_w = torch.autograd.grad(total, [hd, wd])
        return lp.detach(), ent.detach(), grad_h, grad_w

    for with_entropy in (False, True):
        hx, wx = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        tx = targets.clone()
        snapshot = _Snapshot({"hidden": hx, "weight": wx, "targets": tx})
        out = backend(hx, wx, tx, temperature=temperature, with_entropy=with_entropy)
        snapshot.check(kind, backend, {"hidden": hx, "weight": wx, "targets": tx})
        if not isinstance(out, LogprobOutput):
            _fail(kind, backend, "return type", f"returned {type(out).__name__}; expected rlsdk.LogprobOutput")
        ref_lp, ref_ent, ref_hd, ref_wd = reference(with_entropy)
        pairs = [("logprobs", out.logprobs, ref_lp)]
        if with_entropy:
            pairs.append(("entropy", out.entropy, ref_ent))
        elif out.entropy is not None:
            _fail(kind, backend, "entropy", "entropy must be None when with_entropy=False")
        for name, value, ref in pairs:
            if not isinstance(value, torch.Tensor) or value.shape != (n,) or value.dtype != torch.float32:
                got = f"{tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else repr(value)
                _fail(kind, backend, "shape", f"{name} is {got}; expected [{n}] float32")
            if not _close(value, ref, rtol=1e-5, atol=1e-5):
                _fail(
                    kind, backend, "values",
                    f"{name} differs from the float64 reference by {_max_diff(value, ref):.3g}",
                )
        total = (out.logprobs * weights_lp).sum()
        if with_entropy:
            total = total + (out.entropy * weights_ent).sum()
        grads = torch.autograd.grad(total, [hx, wx], allow_unused=True)
        for name, grad, ref in (("hidden", grads[0], ref_hd), ("weight", grads[1], ref_wd)):
            if grad is None or not bool(torch.isfinite(grad).all()):
                _fail(kind, backend, "finite gradient", f"the gradient w.r.t. {name} is missing or not finite")
            if not _close(grad, ref, rtol=1e-4, atol=1e-5):
                _fail(
                    kind, backend, "gradient",
                    f"the gradient w.r.t. {name} differs from the reference by {_max_diff(grad, ref):.3g}",
                )


# --------------------------------------------------------------------------------------------------
# Pytest fixtures

if pytest is not None:

    @pytest.fixture
    def rlsdk_registry() -> Callable[..., Registry]:
        """A factory: ``rlsdk_registry(my_plugin, builtins=True)`` is :func:`make_registry`'s fresh registry."""
        return make_registry

    @pytest.fixture
    def rlsdk_train_batch() -> TrainBatch:
        """:func:`make_train_batch` with seed 0: 8 rows x 6 tokens, ragged mask, ``ref_logprobs`` filled."""
        return make_train_batch()

    @pytest.fixture
    def rlsdk_rollout_batch() -> RolloutBatch:
        """:func:`make_rollout_batch` with seed 0: 2 groups of 4 completions of 6 tokens."""
        return make_rollout_batch()

    @pytest.fixture
    def rlsdk_policy() -> Any:
        """:func:`make_policy` with seed 0: a tiny character-level policy (16 hidden units, one layer)."""
        return make_policy()

    @pytest.fixture
    def rlsdk_examples() -> list[Example]:
        """:func:`make_examples` with seed 0: three distinct ``reverse`` examples."""
        return make_examples()
