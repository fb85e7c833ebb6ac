"""The public data types and component protocols of rlsdk.

Every component kind has one fixed call signature, so the trainer never special-cases a component:

========================  =====================================================================
kind                      call
========================  =====================================================================
``loss``                  ``loss(logprobs [B, T], batch: TrainBatch) -> LossOutput``
``advantage``             ``advantage(batch: RolloutBatch) -> Tensor [B, T]``
``reward``                ``reward(prompts, completions, metadata) -> list[float]``
``sampler``               ``sampler(engine, examples, score, generator, params) -> RolloutBatch``
``engine``                ``engine.generate(prompts, params, generator) -> Generation``; ``update_weights``
``task``                  ``task.sample(n, generator) -> list[Example]``; ``task.eval_examples()``
``policy``                an ``nn.Module`` with ``hidden_states``, ``output_weight``, ``decode_step``
``logprob_backend``       ``backend(hidden [N, H], weight [V, H], targets [N], ...) -> LogprobOutput``
``tracker``               ``tracker.log_metrics(metrics, step)``, ``log_config``, ``close``
========================  =====================================================================

A component's optional members (``Loss.needs_entropy``, ``LogprobBackend.priority`` ...) are declared
on its protocol with their default; :func:`rlsdk.kinds.member` reads them, and
:func:`rlsdk.kinds.conform` checks them (a member of the wrong type, a missing required one) when the
component is built. A class may subclass its protocol to inherit the defaults.

Shapes: ``B`` sequences (prompts x samples per prompt), ``T`` completion tokens (padded), ``P`` prompt
tokens (left-padded), ``S = P + T``, ``V`` vocabulary, ``H`` hidden size, ``N`` flattened tokens.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "Example",
    "RolloutBatch",
    "TrainBatch",
    "LossOutput",
    "LogprobOutput",
    "DecodeOutput",
    "HiddenLossOutput",
    "SamplingParams",
    "Generation",
    "Tokenizer",
    "Loss",
    "AdvantageEstimator",
    "Reward",
    "Sampler",
    "GenerationEngine",
    "ScoreFn",
    "Task",
    "Policy",
    "LogprobBackend",
    "Tracker",
    "RunContext",
]


# --------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Example:
    """One prompt of a task with its verifiable answer.

    Attributes:
        prompt: The text given to the policy.
        answer: The reference answer; rewards read it as ``metadata["answer"]``.
        metadata: Extra fields (copied into the reward's ``metadata`` dict alongside ``answer``).
    """

    prompt: str
    answer: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def reward_metadata(self) -> dict[str, Any]:
        """The dict a reward receives for this example: ``metadata`` plus ``answer``."""
        return {**self.metadata, "answer": self.answer}


def _float_mask(mask: Tensor) -> Tensor:
    return mask if mask.is_floating_point() else mask.float()


@dataclass
class RolloutBatch:
    """Completions sampled from the policy, with their rewards.

    Only ``rewards``, ``group_ids`` and ``mask`` are required; every other field has a default, so an
    advantage estimator can be tested on a batch built from those three alone.

    Attributes:
        rewards: ``[B]`` float, the weighted sum of the reward components.
        group_ids: ``[B]`` long, equal for completions of the same prompt.
        mask: ``[B, T]`` 1 where a completion token is trained on (float or bool).
        sequences: ``[B, S]`` long token ids, prompt (left-padded to ``P``) then completion.
        attention_mask: ``[B, S]`` 1 on real tokens of ``sequences``.
        prompts: ``B`` prompt strings.
        completions: ``B`` decoded completions.
        metadata: ``B`` dicts given to the rewards (each holds ``"answer"``).
        truncated: ``[B]`` bool, True where the completion hit the token limit without EOS.
        reward_components: name -> ``[B]`` float, each reward before weighting.
        old_logprobs: ``[B, T]`` log-probabilities under the policy that sampled (filled by the trainer).
        ref_logprobs: ``[B, T]`` log-probabilities under the reference policy, or None.
        engine_logprobs: ``[B, T]`` the generation engine's log-probabilities of the sampled tokens
            (under the distribution it sampled from, after temperature and top-p; 0 where masked), or
            None. They differ from ``old_logprobs`` when the engine runs other weights or kernels.
        weight_versions: ``[B]`` long, the weight version (the trainer's step) each completion was
            sampled with, or None.
    """

    rewards: Tensor
    group_ids: Tensor
    mask: Tensor
    sequences: Tensor | None = None
    attention_mask: Tensor | None = None
    prompts: list[str] = field(default_factory=list)
    completions: list[str] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    truncated: Tensor | None = None
    reward_components: dict[str, Tensor] = field(default_factory=dict)
    old_logprobs: Tensor | None = None
    ref_logprobs: Tensor | None = None
    engine_logprobs: Tensor | None = None
    weight_versions: Tensor | None = None

    def __post_init__(self) -> None:
        self.mask = _float_mask(self.mask)
        b = self.rewards.shape[0]
        if self.rewards.dim() != 1 or self.group_ids.shape != (b,) or self.mask.dim() != 2 or self.mask.shape[0] != b:
            raise ValueError(
                "RolloutBatch: expected rewards [B], group_ids [B], mask [B, T]; got "
                f"rewards {tuple(self.rewards.shape)}, group_ids {tuple(self.group_ids.shape)}, "
                f"mask {tuple(self.mask.shape)}"
            )

    @property
    def prompt_length(self) -> int:
        """``P``: columns of ``sequences`` before the first completion token."""
        if self.sequences is None:
            return 0
        return self.sequences.shape[1] - self.mask.shape[1]

    @property
    def completion_lengths(self) -> Tensor:
        """``[B]`` number of trained tokens per completion."""
        return self.mask.sum(-1)

    def replace(self, **changes: Any) -> RolloutBatch:
        """A copy with some fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


@dataclass
class TrainBatch:
    """What a loss receives: one micro-batch plus the counts of the whole global batch.

    Only ``mask``, ``advantages``, ``old_logprobs``, ``rewards`` and ``group_ids`` are required
    (``ref_logprobs`` defaults to None); the counts default to those of this batch, so a batch built
    directly is its own global batch.

    Attributes:
        mask: ``[B, T]`` float, 1 where a token is trained on.
        advantages: ``[B, T]`` float.
        old_logprobs: ``[B, T]`` log-probabilities under the sampling policy.
        ref_logprobs: ``[B, T]`` under the reference policy, or None when no component needs them.
        rewards: ``[B]`` float.
        group_ids: ``[B]`` long.
        entropy: ``[B, T]`` entropy of the current policy, filled per micro-batch by the trainer when
            the loss sets ``needs_entropy = True`` (carries gradient); otherwise None.
        num_tokens: valid tokens (sum of ``mask``) in the global batch.
        num_seqs: non-empty sequences in the global batch.
        num_rows: sequences (rows, empty or not) in the global batch.
        max_length: the constant length normaliser of ``seq-mean-token-sum-norm`` (default ``T``).
        sequences: ``[B, S]`` token ids (prompt then completion), used by the trainer's forward pass.
        attention_mask: ``[B, S]``.
    """

    mask: Tensor
    advantages: Tensor
    old_logprobs: Tensor
    rewards: Tensor
    group_ids: Tensor
    ref_logprobs: Tensor | None = None
    entropy: Tensor | None = None
    num_tokens: float | None = None
    num_seqs: float | None = None
    num_rows: float | None = None
    max_length: float | None = None
    sequences: Tensor | None = None
    attention_mask: Tensor | None = None

    def __post_init__(self) -> None:
        self.mask = _float_mask(self.mask)
        for name in ("advantages", "old_logprobs", "ref_logprobs", "entropy"):
            value = getattr(self, name)
            if value is not None and value.shape != self.mask.shape:
                raise ValueError(
                    f"TrainBatch.{name} has shape {tuple(value.shape)}; it must match mask {tuple(self.mask.shape)}"
                )
        if self.num_tokens is None:
            self.num_tokens = float(self.mask.sum())
        if self.num_seqs is None:
            self.num_seqs = float((self.mask.sum(-1) > 0).sum())
        if self.num_rows is None:
            self.num_rows = float(self.mask.shape[0])
        if self.max_length is None:
            self.max_length = float(self.mask.shape[1])

    @classmethod
    def from_rollout(cls, rollout: RolloutBatch, advantages: Tensor, max_length: float | None = None) -> TrainBatch:
        """The global train batch of a scored rollout (``old_logprobs`` must be filled)."""
        if rollout.old_logprobs is None:
            raise ValueError("TrainBatch.from_rollout: rollout.old_logprobs is None; compute them first")
        return cls(
            mask=rollout.mask,
            advantages=advantages,
            old_logprobs=rollout.old_logprobs,
            ref_logprobs=rollout.ref_logprobs,
            rewards=rollout.rewards,
            group_ids=rollout.group_ids,
            max_length=max_length,
            sequences=rollout.sequences,
            attention_mask=rollout.attention_mask,
        )

    def select(self, index: Tensor | slice) -> TrainBatch:
        """Rows ``index`` as a micro-batch that keeps this batch's global counts."""
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kw[f.name] = value[index] if isinstance(value, Tensor) else value
        return TrainBatch(**kw)

    def split(self, n: int) -> list[TrainBatch]:
        """Split into ``n`` contiguous micro-batches (the last may be smaller); counts stay global."""
        rows = self.mask.shape[0]
        if not 1 <= n <= max(rows, 1):
            raise ValueError(f"cannot split a batch of {rows} rows into {n} micro-batches (valid: 1..{rows})")
        size = -(-rows // n)
        return [self.select(slice(i, i + size)) for i in range(0, rows, size)]


@dataclass
class LossOutput:
    """What a loss returns.

    Attributes:
        loss: Scalar tensor to minimise. Normalised by the *global* counts of the batch, so the sum of
            the losses of the micro-batches equals the loss of the whole batch.
        metrics: Values to log, normalised the same way (they are summed over micro-batches): Python
            floats or detached 0-dim tensors. The trainer turns them into floats once per optimiser
            step, so tensors let a loss on a GPU run without waiting for it; each ``float(x)`` in a
            loss makes the CPU wait for the GPU, once per call (once per chunk on the fused paths).
    """

    loss: Tensor
    metrics: dict[str, float | Tensor] = field(default_factory=dict)


@dataclass
class LogprobOutput:
    """Per-token log-probabilities (and optionally entropies) from a logprob backend.

    Attributes:
        logprobs: ``[N]`` float32 log pi(target | context) after temperature.
        entropy: ``[N]`` float32 entropy of the temperature-scaled distribution, or None.
    """

    logprobs: Tensor
    entropy: Tensor | None = None


@dataclass
class DecodeOutput:
    """One incremental decoding step of a policy.

    Attributes:
        logits: ``[B, V]`` next-token logits (before temperature).
        state: Opaque cache the policy wants back on the next step (None is fine).
    """

    logits: Tensor
    state: Any = None


@dataclass
class HiddenLossOutput:
    """What :meth:`LogprobBackend.loss_from_hidden` returns: the loss of a micro-batch computed
    straight from hidden states (a fused kernel), with the per-token values it formed on the way.

    Attributes:
        output: The loss and its metrics, as ``loss(logprobs, batch)`` would return them.
        logprobs: ``[B, T]`` log-probabilities of the completion tokens (detached).
        entropy: ``[B, T]`` entropies of the temperature-scaled distributions (detached); the trainer
            logs their token mean as ``entropy``.
    """

    output: LossOutput
    logprobs: Tensor
    entropy: Tensor


@dataclass(frozen=True)
class SamplingParams:
    """How an engine samples: what a sampler asks for, and the settings the trainer reads from it.

    Attributes:
        n: Completions per prompt (``>= 1``; the group size of GRPO-like advantages).
        temperature: Divides the logits before sampling (``>= 0``; 0 is greedy). The trainer computes
            the training log-probs at the same temperature (in the logprob backend, once).
        top_p: Nucleus mass in ``(0, 1]``: sample from the smallest set of tokens whose probability
            reaches it (1 keeps every token).
        max_new_tokens: Token limit per completion (``>= 1``); also the constant normaliser of the
            ``seq-mean-token-sum-norm`` aggregation (Dr. GRPO).
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16

    def __post_init__(self) -> None:
        from rlsdk.validation import check_int, check_number

        checked = {
            "n": check_int(self.n, "sampler.n", low=1),
            "temperature": check_number(self.temperature, "sampler.temperature", low=0.0),
            "top_p": check_number(self.top_p, "sampler.top_p", low=0.0, high=1.0, low_open=True),
            "max_new_tokens": check_int(self.max_new_tokens, "sampler.max_new_tokens", low=1),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> SamplingParams:
        """A copy with some fields replaced (checked again)."""
        return dataclasses.replace(self, **changes)


#: Why a completion ended: ``"stop"`` (the engine produced EOS, which is part of the completion) or
#: ``"length"`` (it reached ``max_new_tokens`` first).
FINISH_REASONS = ("stop", "length")


@dataclass
class Generation:
    """What a generation engine returns for ``P`` prompts: ``B = P * n`` completions, the ``n``
    completions of prompt ``i`` in rows ``i * n`` to ``i * n + n - 1``.

    Attributes:
        token_ids: ``B`` lists of completion token ids (EOS included when the completion stopped).
        logprobs: ``B`` lists, the engine's log-probability of each of those tokens under the
            distribution it sampled from (after temperature and top-p; for greedy decoding, under
            the plain softmax).
        finish_reasons: ``B`` values of ``rlsdk.types.FINISH_REASONS``.
        weight_versions: ``B`` weight versions (the ``version`` of the last ``update_weights``
            before the completion was sampled).
    """

    token_ids: list[list[int]]
    logprobs: list[list[float]]
    finish_reasons: list[str]
    weight_versions: list[int]

    def __post_init__(self) -> None:
        b = len(self.token_ids)
        if not (len(self.logprobs) == len(self.finish_reasons) == len(self.weight_versions) == b):
            raise ValueError(
                f"Generation: token_ids, logprobs, finish_reasons and weight_versions must have one entry per "
                f"completion; got {b}, {len(self.logprobs)}, {len(self.finish_reasons)}, {len(self.weight_versions)}"
            )


# --------------------------------------------------------------------------------------------------
# Component protocols


@runtime_checkable
class Tokenizer(Protocol):
    """Text <-> token ids. ``eos_token_id`` ends a completion; ``pad_token_id`` fills padding."""

    pad_token_id: int
    eos_token_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without special tokens."""
        ...

    def decode(self, ids: list[int]) -> str:
        """The text of ``ids``, skipping special tokens."""
        ...


class Loss(Protocol):
    """A policy loss: per-token terms aggregated with the batch's global counts.

    A loss that needs more than the log-probs says so with two members (both default to False):
    ``needs_ref_logprobs`` (the trainer fills ``batch.ref_logprobs``) and ``needs_entropy`` (it fills
    ``batch.entropy``, with gradient). A fused kernel that computes the loss straight from hidden
    states belongs to the logprob backend (:meth:`LogprobBackend.loss_from_hidden`), not the loss.
    """

    #: The trainer fills ``batch.ref_logprobs`` (needs ``train.reference: true``). Default False.
    needs_ref_logprobs: bool = False
    #: The trainer fills ``batch.entropy`` with gradient. Default False.
    needs_entropy: bool = False

    def __call__(self, logprobs: Tensor, batch: TrainBatch) -> LossOutput: ...


class AdvantageEstimator(Protocol):
    """Maps a scored rollout to per-token advantages ``[B, T]`` (zero where ``mask`` is 0)."""

    #: The trainer fills ``batch.ref_logprobs`` (a KL penalty in the reward). Default False.
    needs_ref_logprobs: bool = False

    def __call__(self, batch: RolloutBatch) -> Tensor: ...


@runtime_checkable
class Reward(Protocol):
    """Scores completions. ``metadata[i]["answer"]`` is the task's answer for row ``i``."""

    def __call__(self, prompts: list[str], completions: list[str], metadata: list[dict[str, Any]]) -> list[float]: ...


# typing.Callable, not collections.abc.Callable: on Python 3.10 the latter alias loses its docstring
ScoreFn = typing.Callable[[RolloutBatch], RolloutBatch]  # noqa: UP006
"""Fills ``rewards`` and ``reward_components`` of a rollout (given to samplers by the trainer)."""


class GenerationEngine(Protocol):
    """Turns prompt token ids and sampling settings into completions.

    The trainer gives the engine the training policy with :meth:`update_weights` before the first
    rollout and after every step (and after a checkpoint is loaded); samplers call :meth:`generate`
    and never touch the training model. An in-process engine keeps a reference to the policy; an
    engine in another process or on other GPUs (vLLM, SGLang) copies the weights it is given.
    """

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer of the model the engine samples from (after the first :meth:`update_weights`)."""
        ...

    def update_weights(self, policy: Policy, version: int) -> None:
        """Sample from ``policy``'s current weights from now on; completions report ``version``."""
        ...

    def generate(self, prompts: list[list[int]], params: SamplingParams, generator: torch.Generator) -> Generation:
        """``params.n`` completions of each prompt (token ids without special tokens), drawn with
        ``generator`` (and no other randomness, so a seed fixes them)."""
        ...


class Sampler(Protocol):
    """Generates completions for a list of examples through an engine and scores them with ``score``.

    Returns a scored ``RolloutBatch`` whose ``group_ids`` tie the completions of one prompt. A sampler
    may call ``score`` several times (to filter groups, for example).

    ``params`` (required) are the settings it trains with: the trainer reads ``params.temperature``
    (for the training log-probs) and ``params.max_new_tokens`` (the length normaliser of
    ``seq-mean-token-sum-norm``). Evaluation calls the sampler with :meth:`eval_params`.
    """

    params: SamplingParams

    def eval_params(self, temperature: float) -> SamplingParams:
        """The settings of evaluation at ``temperature``. Default: ``params`` with ``n=1`` and that
        temperature (one completion per held-out prompt)."""
        return self.params.replace(n=1, temperature=temperature)

    def __call__(
        self,
        engine: GenerationEngine,
        examples: list[Example],
        score: ScoreFn,
        generator: torch.Generator,
        params: SamplingParams,
    ) -> RolloutBatch: ...


class Task(Protocol):
    """A source of prompts with verifiable answers.

    ``sample`` draws training examples with ``generator`` (so a seed fixes the data order);
    ``eval_examples`` returns the fixed held-out set.
    """

    #: The data files the task reads; the run's manifest records their hashes. Default ``()``.
    files: Sequence[str] = ()

    def sample(self, n: int, generator: torch.Generator) -> list[Example]:
        """``n`` training examples drawn with ``generator`` (and no other randomness)."""
        ...

    def eval_examples(self) -> list[Example]:
        """The fixed held-out examples (never returned by :meth:`sample`)."""
        ...


class Policy(Protocol):
    """A causal language model, as an ``nn.Module``.

    The trainer computes log-probabilities from ``hidden_states`` and ``output_weight`` through a
    logprob backend (so temperature is applied there, once); the ``inprocess`` engine samples with
    ``decode_step``.
    """

    tokenizer: Tokenizer

    def hidden_states(self, sequences: Tensor, attention_mask: Tensor) -> Tensor:
        """``[B, S, H]`` final hidden states (after the last norm) for ``sequences [B, S]``."""
        ...

    def output_weight(self) -> Tensor:
        """``[V, H]`` output-layer weight (logits = hidden @ weight.T)."""
        ...

    def decode_step(self, sequences: Tensor, attention_mask: Tensor, state: Any) -> DecodeOutput:
        """Next-token logits for the last position of ``sequences``; ``state`` is None on the first step."""
        ...

    def check_prompts(self, prompts: list[str], max_new_tokens: int) -> None:
        """Raise :class:`rlsdk.ConfigError` if a prompt does not tokenise, or does not fit the policy's
        length limit with ``max_new_tokens`` more tokens. Called before training on the task's held-out
        prompts. Default: no check."""
        return None

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        """The trainable parameters (``nn.Module.parameters``)."""
        ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Tensors only: what checkpoints save (``nn.Module.state_dict``)."""
        ...

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Restore from :meth:`state_dict` (``nn.Module.load_state_dict``)."""
        ...


class LogprobBackend(Protocol):
    """Computes log pi(target) (and optionally entropy) from hidden states and the output weight.

    ``logits = hidden @ weight.T / temperature``. ``auto`` picks the highest :attr:`priority` among
    the backends that :meth:`supports` the device. The backend is the one owner of "the loss from
    hidden states": :meth:`loss_from_hidden` lets a fused kernel compute the loss of a micro-batch
    without the ``[N, V]`` logits.
    """

    #: Rank under ``logprob.backend=auto`` (highest wins). Default 0.
    priority: int = 0

    def supports(self, device: torch.device) -> bool:
        """Whether the backend runs on ``device``. Default: every device."""
        return True

    def loss_from_hidden(
        self, hidden: Tensor, weight: Tensor, targets: Tensor, batch: TrainBatch, loss: Loss, *, temperature: float
    ) -> HiddenLossOutput | None:
        """``loss`` of the micro-batch ``batch`` straight from hidden states ``[B*T, H]``, or None where
        the backend has no fused path for it (then the trainer calls the backend, then the loss).
        Default: None."""
        return None

    def __call__(
        self, hidden: Tensor, weight: Tensor, targets: Tensor, *, temperature: float = 1.0, with_entropy: bool = False
    ) -> LogprobOutput: ...


@runtime_checkable
class Tracker(Protocol):
    """Receives the resolved config once and the metrics of every step."""

    def log_config(self, config: dict[str, Any]) -> None:
        """Record the resolved config, once, before the first step."""
        ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Record the metrics of ``step`` (1-based)."""
        ...

    def close(self) -> None:
        """Flush and release resources after the last step."""
        ...


class RunContext(Protocol):
    """What event hooks (``on_train_start``, ``on_step_end``, ``on_train_end``) may rely on about the
    running training run. The trainer's :class:`rlsdk.trainer.Run` has more, which may change."""

    #: The resolved config (read it; changing it changes nothing).
    config: dict[str, Any]
    #: Optimiser steps done (0 before the first).
    step: int
    #: The metrics rows written so far (``{"step": ..., "wall_time": ..., **metrics}``).
    history: list[dict[str, Any]]
    #: The policy being trained.
    policy: Policy

    @property
    def path(self) -> Path:
        """The run folder."""
        ...

    def label(self, kind: str) -> str:
        """How messages name the run's component of ``kind``: ``loss 'clipped_pg' (plugin rlsdk:policy_gradient)``."""
        ...
