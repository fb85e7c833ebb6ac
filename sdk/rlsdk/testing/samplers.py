"""Conformance checks of samplers: :func:`check_sampler`."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from rlsdk.testing._builders import (
    _conform,
    _fail,
    _label,
    _same,
    _seeded,
    _Snapshot,
    make_engine,
    make_examples,
    make_policy,
)

if TYPE_CHECKING:
    from rlsdk.types import Example, RolloutBatch, SamplingParams

__all__ = ["check_sampler"]


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


def _sample(
    sampler: Any, engine: Any, examples: list[Example], seed: int, global_seed: int, params: SamplingParams
) -> tuple[Any, int]:
    """Run ``sampler`` with a generator seeded ``seed`` and the global RNG seeded ``global_seed``."""
    import torch

    score = _RecordingScore()
    generator = torch.Generator().manual_seed(seed)
    with _seeded(global_seed):
        batch = sampler(engine, examples, score, generator, params)
    return batch, score.calls


def _check_rollout(sampler: Any, batch: Any, examples: list[Example], params: SamplingParams) -> None:
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
            "sampler",
            sampler,
            "sequences",
            f"sequences {tuple(seq.shape)} and attention_mask {tuple(attn.shape)} must both be [B, P + T] "
            f"with B = {b}, T = {t}",
        )
    if seq.is_floating_point():
        _fail("sampler", sampler, "sequences", f"sequences must hold integer token ids, got {seq.dtype}")
    if bool((batch.mask > attn[:, seq.shape[1] - t :]).any()):
        _fail("sampler", sampler, "sequences", "a trained completion token (mask 1) has attention_mask 0")
    max_new = params.max_new_tokens
    if t > max_new:
        _fail("sampler", sampler, "length", f"completions have T = {t} tokens, more than max_new_tokens = {max_new}")
    for name, shape in (("engine_logprobs", (b, t)), ("weight_versions", (b,)), ("truncated", (b,))):
        value = getattr(batch, name)
        if value is not None and tuple(value.shape) != shape:
            _fail("sampler", sampler, name, f"{name} has shape {tuple(value.shape)}; expected {shape} (or None)")
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
                "sampler",
                sampler,
                "metadata",
                f"row {i}: metadata {meta!r} must hold the example's answer {answers[prompt]!r}",
            )
        if first_of_group.setdefault(gid, prompt) != prompt:
            _fail(
                "sampler",
                sampler,
                "group_ids",
                f"group {gid} mixes prompts {first_of_group[gid]!r} and {prompt!r}; group_ids must tie the "
                "completions of one example",
            )
    missing = set(answers) - set(batch.prompts)
    if missing:
        _fail("sampler", sampler, "prompts", f"no completion for example(s) {sorted(missing)}")
    if len(first_of_group) != len(examples):
        _fail(
            "sampler",
            sampler,
            "group_ids",
            f"{len(first_of_group)} distinct group_ids for {len(examples)} examples; use one group per example",
        )
    sizes = collections.Counter(batch.group_ids.tolist())
    for gid, size in sorted(sizes.items()):
        if size != params.n:
            _fail(
                "sampler",
                sampler,
                "params.n",
                f"group {gid} has {size} completions; the params given ask for n = {params.n} per example",
            )


def _engine_of(sampler: Any, engine: Any, policy: Any, seed: int) -> tuple[Any, Any]:
    """``(engine, policy whose weights must stay unchanged)``: ``engine`` as given, or the ``inprocess``
    engine of ``policy`` (default :func:`make_policy`). A policy passed as ``engine`` (the call of
    rlsdk before generation engines: ``check_sampler(sampler, policy, examples)``) is treated as ``policy``."""
    if engine is not None and policy is not None:
        raise ValueError(f"check_sampler: {_label('sampler', sampler)}: give an engine or a policy, not both")
    if engine is not None and not hasattr(engine, "generate") and hasattr(engine, "decode_step"):
        engine, policy = None, engine
    if engine is None:
        policy = make_policy(seed) if policy is None else policy
        return make_engine(policy=policy), policy
    return engine, getattr(engine, "policy", None)


def check_sampler(
    sampler: Any,
    engine: Any = None,
    examples: list[Example] | None = None,
    seed: int = 0,
    *,
    policy: Any = None,
) -> None:
    """Check that ``sampler`` honours the :class:`rlsdk.Sampler` contract.

    The sampler must conform to its kind (:func:`rlsdk.kinds.conform`: ``params`` an
    :class:`rlsdk.SamplingParams`), and ``sampler.eval_params(temperature)`` (or the protocol's
    default) must return an :class:`rlsdk.SamplingParams` at that temperature.
    ``sampler(engine, examples, score, generator, params)`` is called as the trainer calls it, with
    ``params = sampler.params``, then as evaluation calls it, with ``eval_params(0.0)`` at half the
    token limit, with a recording ``score`` (reward: a function of the completion's text). Each call
    must return a scored :class:`rlsdk.RolloutBatch`: ``score`` called, rewards the ones ``score``
    gave; ``prompts``, ``completions`` and ``metadata`` of length ``B``; a binary mask ``[B, T]``
    with ``T <= params.max_new_tokens``; integer ``sequences`` and an ``attention_mask`` ``[B, P + T]``
    covering every trained token; ``engine_logprobs [B, T]``, ``weight_versions [B]`` and
    ``truncated [B]`` when filled; ``group_ids`` with one group of ``params.n`` completions per
    example, tying completions of the same prompt, and each row's metadata holding its example's
    answer. The sampler must leave the policy's parameters and the examples unchanged, and give
    identical output for the same generator seed even when the global RNG differs.

    Args:
        sampler: The sampler (e.g. ``registry.create("sampler", "group", {"n": 2})``).
        engine: The generation engine to sample through, ready to ``generate``; default the
            ``inprocess`` engine (:func:`make_engine`) of ``policy``. A policy given here is taken
            as ``policy`` (the call of earlier versions, ``check_sampler(sampler, policy, examples)``).
        examples: Examples with distinct prompts; default :func:`make_examples`.
        seed: Seed of the sampling generator and of the defaults.
        policy: The policy of the default engine; default :func:`make_policy`.

    Raises:
        AssertionError: ``"sampler <Name>: <property>: <details>"`` for the first property that fails
            (or the message of :func:`rlsdk.kinds.conform` for a missing or mistyped member).
    """
    import torch

    from rlsdk.kinds import member
    from rlsdk.types import SamplingParams

    _conform("sampler", sampler)
    params = sampler.params
    for temperature in (0.0, 0.7):
        evaluation = member("sampler", sampler, "eval_params")(temperature)
        if not isinstance(evaluation, SamplingParams) or evaluation.temperature != temperature:
            _fail(
                "sampler",
                sampler,
                "eval_params",
                f"eval_params({temperature}) returned {evaluation!r:.120}; expected an rlsdk.SamplingParams with "
                f"temperature={temperature}",
            )
    engine, policy = _engine_of(sampler, engine, policy, seed)
    examples = make_examples(seed) if examples is None else examples
    named = list(policy.named_parameters()) if hasattr(policy, "named_parameters") else []
    weights = {name: p.detach().clone() for name, p in named}
    snapshot = _Snapshot({"examples": examples})
    batch, calls = _sample(sampler, engine, examples, seed, global_seed=seed, params=params)
    snapshot.check("sampler", sampler, {"examples": examples})
    for name, p in named:
        if not torch.equal(p.detach(), weights[name]):
            _fail("sampler", sampler, "policy unchanged", f"parameter {name} of the policy changed while sampling")
    if calls == 0:
        _fail("sampler", sampler, "scored", "the score function was never called; return score(batch)")
    _check_rollout(sampler, batch, examples, params)

    again, _ = _sample(sampler, engine, examples, seed, global_seed=seed + 1, params=params)
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
            "sampler",
            sampler,
            "deterministic",
            "the same generator seed gave different rollouts (with a different global RNG state); "
            "draw every random number from the `generator` argument",
        )

    # The params of the call, not the sampler's own: what evaluation relies on.
    evaluation = member("sampler", sampler, "eval_params")(0.0)
    evaluation = evaluation.replace(max_new_tokens=max(1, evaluation.max_new_tokens // 2))
    rollout, calls = _sample(sampler, engine, examples, seed, global_seed=seed, params=evaluation)
    if calls == 0:
        _fail("sampler", sampler, "scored", "the score function was never called with eval_params; return score(batch)")
    _check_rollout(sampler, rollout, examples, evaluation)
