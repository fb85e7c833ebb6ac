"""Builders of tiny seeded inputs (batches, a policy, examples, an engine, a registry) and the private
helpers the checks share: how a failure is worded, seeded calls, exact and tolerant comparisons, and
snapshots of inputs.

Imports torch and rlsdk only inside its functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from rlsdk.plugins import Registry
    from rlsdk.types import Example, RolloutBatch, TrainBatch

__all__ = [
    "make_registry",
    "make_train_batch",
    "make_rollout_batch",
    "make_policy",
    "make_examples",
    "make_engine",
    "RTOL",
]

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
                        kind,
                        component,
                        "input modified in place",
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


def _conform(kind: str, component: Any) -> None:
    """:func:`rlsdk.kinds.conform` as a check: a missing required member, a member of the wrong type
    or an undeclared ``needs_*`` attribute is an ``AssertionError`` with the kinds message."""
    from rlsdk.errors import ComponentError
    from rlsdk.kinds import conform

    try:
        conform(kind, component, _label(kind, component))
    except ComponentError as err:
        raise AssertionError(str(err)) from None


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


def make_engine(seed: int = 0, policy: Any = None, version: int = 0) -> Any:
    """The ``inprocess`` generation engine, given ``policy`` with ``update_weights(policy, version)``.

    Args:
        seed: Seed of the default policy.
        policy: The policy to sample from; default :func:`make_policy` with ``seed``.
        version: The weight version its completions report.

    Returns:
        The engine (an :class:`rlsdk.GenerationEngine`), ready to ``generate``.
    """
    engine = _builtins().create("engine", "inprocess", {})
    engine.update_weights(make_policy(seed) if policy is None else policy, version)
    return engine
