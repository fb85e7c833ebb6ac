"""Conformance checks of generation engines: :func:`check_engine`."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rlsdk.testing._builders import _conform, _fail, _seeded, _Snapshot, make_examples, make_policy

if TYPE_CHECKING:
    from rlsdk.types import Generation, SamplingParams

__all__ = ["check_engine"]

#: Absolute tolerance on the engine's log-probabilities where two calls must agree (the same seed,
#: or the same prompt in another row).
LOGPROB_ATOL = 1e-4


def _generate(engine: Any, prompts: list[list[int]], params: SamplingParams, seed: int, global_seed: int) -> Any:
    """``engine.generate`` with a generator seeded ``seed`` and the global RNG seeded ``global_seed``."""
    import torch

    with _seeded(global_seed):
        return engine.generate(prompts, params, torch.Generator().manual_seed(seed))


def _check_generation(
    engine: Any, out: Any, prompts: list[list[int]], params: SamplingParams, version: int, eos: int | None, vocab: Any
) -> Generation:
    """The structural checks of :func:`check_engine` on one result of ``generate``."""
    from rlsdk.types import FINISH_REASONS, Generation

    call = f"generate({len(prompts)} prompts, n={params.n}, max_new_tokens={params.max_new_tokens})"
    if not isinstance(out, Generation):
        _fail("engine", engine, "return type", f"{call} returned {type(out).__name__}; expected rlsdk.Generation")
    b = len(prompts) * params.n
    lengths = [len(getattr(out, name)) for name in ("token_ids", "logprobs", "finish_reasons", "weight_versions")]
    if lengths != [b] * 4:
        _fail(
            "engine",
            engine,
            "completions",
            f"{call} returned token_ids, logprobs, finish_reasons and weight_versions of lengths {lengths}; "
            f"expected {b} each (n = {params.n} completions per prompt)",
        )
    rows = zip(out.token_ids, out.logprobs, out.finish_reasons, out.weight_versions)
    for i, (ids, lps, reason, v) in enumerate(rows):
        if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            _fail("engine", engine, "token_ids", f"completion {i}: token_ids {ids!r:.80} must be a list of ints")
        if not isinstance(lps, list) or len(lps) != len(ids):
            got = len(lps) if isinstance(lps, list) else type(lps).__name__
            _fail(
                "engine",
                engine,
                "shapes",
                f"completion {i} has {len(ids)} token ids and {got} logprobs; expected one log-probability per token",
            )
        if not 1 <= len(ids) <= params.max_new_tokens:
            _fail(
                "engine",
                engine,
                "max_new_tokens",
                f"completion {i} has {len(ids)} tokens; expected 1 to max_new_tokens = {params.max_new_tokens}",
            )
        if isinstance(vocab, int) and any(not 0 <= t < vocab for t in ids):
            _fail("engine", engine, "token_ids", f"completion {i}: token id outside the vocabulary [0, {vocab}): {ids}")
        for lp in lps:
            if isinstance(lp, bool) or not isinstance(lp, (int, float)) or not math.isfinite(lp) or lp > 1e-6:
                _fail(
                    "engine",
                    engine,
                    "logprobs",
                    f"completion {i}: log-probability {lp!r} is not a finite float <= 0",
                )
        if reason not in FINISH_REASONS:
            _fail(
                "engine",
                engine,
                "finish_reasons",
                f"completion {i} has finish reason {reason!r}; expected one of {FINISH_REASONS}",
            )
        if eos is not None:
            if eos in ids[:-1]:
                _fail(
                    "engine",
                    engine,
                    "finish_reasons",
                    f"completion {i} goes on after EOS (token {eos}) at position {ids.index(eos)}; "
                    "stop at the first EOS",
                )
            stopped = bool(ids) and ids[-1] == eos
            if (reason == "stop") != stopped or (reason == "length" and len(ids) != params.max_new_tokens):
                _fail(
                    "engine",
                    engine,
                    "finish_reasons",
                    f"completion {i} of {len(ids)} tokens {'ends' if stopped else 'does not end'} with EOS but has "
                    f"finish reason {reason!r}; 'stop' ends with EOS, 'length' has max_new_tokens = "
                    f"{params.max_new_tokens} tokens",
                )
        if v != version:
            _fail(
                "engine",
                engine,
                "weight_versions",
                f"completion {i} reports weight version {v!r} after update_weights(policy, {version}); "
                "stamp completions with the version of the last update_weights",
            )
    return out


def _agree(a: Generation, b: Generation, rows_a: list[int], rows_b: list[int]) -> int | None:
    """The first ``k`` where row ``rows_a[k]`` of ``a`` and ``rows_b[k]`` of ``b`` differ (None: all agree)."""
    for k, (i, j) in enumerate(zip(rows_a, rows_b)):
        if a.token_ids[i] != b.token_ids[j] or a.finish_reasons[i] != b.finish_reasons[j]:
            return k
        if any(abs(x - y) > LOGPROB_ATOL for x, y in zip(a.logprobs[i], b.logprobs[j])):
            return k
    return None


def check_engine(
    engine: Any,
    policy: Any = None,
    prompts: list[list[int]] | None = None,
    seed: int = 0,
    *,
    params: SamplingParams | None = None,
) -> None:
    """Check that ``engine`` honours the :class:`rlsdk.GenerationEngine` contract.

    The engine must conform to its kind (:func:`rlsdk.kinds.conform`: ``tokenizer``,
    ``update_weights`` and ``generate``). After ``engine.update_weights(policy, 3)``, its
    ``tokenizer`` must have integer ``eos_token_id`` and ``pad_token_id``, and
    ``engine.generate(prompts, params, generator)`` must return an :class:`rlsdk.Generation` with
    ``len(prompts) * params.n`` completions, each a list of 1 to ``max_new_tokens`` int token ids in
    the vocabulary with as many finite log-probabilities ``<= 0``, a finish reason of
    ``rlsdk.types.FINISH_REASONS`` (``"stop"`` exactly when the completion ends with EOS, which
    it does not go past; ``"length"`` at ``max_new_tokens`` tokens) and the weight version 3. The
    same generator seed must give the same completions (log-probabilities within 1e-4) under a
    different global RNG state. Greedy decoding (temperature 0) checks the layout: the ``n``
    completions of prompt ``i`` are rows ``i * n`` to ``i * n + n - 1``, each equal to row ``i`` of
    the same call with ``n = 1``. After ``update_weights(policy, 7)`` completions report version 7.
    The prompts and the policy's parameters must be unchanged.

    Args:
        engine: The engine (e.g. ``registry.create("engine", "my_engine")``).
        policy: What ``update_weights`` is given; default :func:`make_policy` (a tiny character-level
            policy: an engine for other models needs a policy it can load).
        prompts: Prompt token ids, at least two distinct prompts; default the prompts of
            :func:`make_examples` encoded with the engine's tokenizer.
        seed: Seed of the generator and of the defaults.
        params: The sampling settings; default ``SamplingParams(n=2, temperature=1.0, top_p=0.9,
            max_new_tokens=4)``.

    Raises:
        AssertionError: ``"engine <Name>: <property>: <details>"`` for the first property that fails
            (or the message of :func:`rlsdk.kinds.conform` for a missing member).
    """
    import torch

    from rlsdk.types import SamplingParams

    _conform("engine", engine)
    policy = make_policy(seed) if policy is None else policy
    params = SamplingParams(n=2, temperature=1.0, top_p=0.9, max_new_tokens=4) if params is None else params
    named = list(policy.named_parameters()) if hasattr(policy, "named_parameters") else []
    weights = {name: p.detach().clone() for name, p in named}
    engine.update_weights(policy, 3)
    tokenizer = engine.tokenizer
    eos, pad = getattr(tokenizer, "eos_token_id", None), getattr(tokenizer, "pad_token_id", None)
    for name, value in (("eos_token_id", eos), ("pad_token_id", pad)):
        if isinstance(value, bool) or not isinstance(value, int):
            _fail("engine", engine, "tokenizer", f"engine.tokenizer.{name} must be an int, got {value!r}")
    vocab = getattr(tokenizer, "vocab_size", None)
    if prompts is None:
        prompts = [tokenizer.encode(example.prompt) for example in make_examples(seed)]

    snapshot = _Snapshot({"prompts": prompts})
    out = _check_generation(engine, _generate(engine, prompts, params, seed, seed), prompts, params, 3, eos, vocab)
    snapshot.check("engine", engine, {"prompts": prompts})
    for name, p in named:
        if not torch.equal(p.detach(), weights[name]):
            _fail("engine", engine, "policy unchanged", f"parameter {name} of the policy changed while generating")

    again = _generate(engine, prompts, params, seed, seed + 1)
    rows = list(range(len(out.token_ids)))
    same = isinstance(again, type(out)) and len(again.token_ids) == len(rows)
    if not same or _agree(out, again, rows, rows) is not None:
        _fail(
            "engine",
            engine,
            "deterministic",
            "the same generator seed gave different completions (with a different global RNG state); "
            "draw every random number from the `generator` argument",
        )

    greedy = params.replace(temperature=0.0, top_p=1.0)
    grouped = _check_generation(engine, _generate(engine, prompts, greedy, seed, seed), prompts, greedy, 3, eos, vocab)
    single = params.replace(n=1, temperature=0.0, top_p=1.0)
    one = _check_generation(engine, _generate(engine, prompts, single, seed, seed), prompts, single, 3, eos, vocab)
    n = greedy.n
    k = _agree(grouped, one, list(range(len(prompts) * n)), [i // n for i in range(len(prompts) * n)])
    if k is not None:
        _fail(
            "engine",
            engine,
            "layout",
            f"greedy completion {k} (n = {n}) differs from greedy completion {k // n} of prompt {k // n} with n = 1; "
            f"the n completions of prompt i must be rows i * n to i * n + n - 1",
        )

    engine.update_weights(policy, 7)
    _check_generation(engine, _generate(engine, prompts, params, seed, seed), prompts, params, 7, eos, vocab)
