"""The public data types and component protocols of rlsdk.

Every component kind has one fixed call signature, so the trainer never special-cases a component:

========================  =====================================================================
kind                      call
========================  =====================================================================
``loss``                  ``loss(logprobs [B, T], batch: TrainBatch) -> LossOutput``
``advantage``             ``advantage(batch: RolloutBatch) -> Tensor [B, T]``
``reward``                ``reward(prompts, completions, metadata) -> list[float]``
``sampler``               ``sampler(policy, examples, score, generator) -> RolloutBatch``
``task``                  ``task.sample(n, generator) -> list[Example]``; ``task.eval_examples()``
``policy``                an ``nn.Module`` with ``hidden_states``, ``output_weight``, ``decode_step``
``logprob_backend``       ``backend(hidden [N, H], weight [V, H], targets [N], ...) -> LogprobOutput``
``tracker``               ``tracker.log_metrics(metrics, step)``, ``log_config``, ``close``
========================  =====================================================================

Shapes: ``B`` sequences (prompts x samples per prompt), ``T`` completion tokens (padded), ``P`` prompt
tokens (left-padded), ``S = P + T``, ``V`` vocabulary, ``H`` hidden size, ``N`` flattened tokens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "Example",
    "RolloutBatch",
    "TrainBatch",
    "LossOutput",
    "LogprobOutput",
    "DecodeOutput",
    "Tokenizer",
    "Loss",
    "AdvantageEstimator",
    "Reward",
    "Sampler",
    "ScoreFn",
    "Task",
    "Policy",
    "LogprobBackend",
    "Tracker",
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


@runtime_checkable
class Loss(Protocol):
    """A policy loss: per-token terms aggregated with the batch's global counts.

    Optional attributes the trainer reads: ``needs_ref_logprobs`` (fill ``batch.ref_logprobs``) and
    ``needs_entropy`` (fill ``batch.entropy`` with gradient). Both default to False. A loss that
    computes the log-probs itself (a fused kernel) may define
    ``from_hidden(hidden, weight, targets, batch, *, temperature, backend) -> (LossOutput, logprobs,
    entropy)``; the trainer then calls it for the update instead of backend + ``__call__``
    (:func:`rlsdk.trainer.micro_batch_loss`).
    """

    def __call__(self, logprobs: Tensor, batch: TrainBatch) -> LossOutput: ...


@runtime_checkable
class AdvantageEstimator(Protocol):
    """Maps a scored rollout to per-token advantages ``[B, T]`` (zero where ``mask`` is 0)."""

    def __call__(self, batch: RolloutBatch) -> Tensor: ...


@runtime_checkable
class Reward(Protocol):
    """Scores completions. ``metadata[i]["answer"]`` is the task's answer for row ``i``."""

    def __call__(self, prompts: list[str], completions: list[str], metadata: list[dict[str, Any]]) -> list[float]: ...


ScoreFn = Callable[[RolloutBatch], RolloutBatch]
"""Fills ``rewards`` and ``reward_components`` of a rollout (given to samplers by the trainer)."""


@runtime_checkable
class Sampler(Protocol):
    """Generates completions for a list of examples and scores them with ``score``.

    Returns a scored ``RolloutBatch`` whose ``group_ids`` tie the completions of one prompt. A sampler
    may call ``score`` several times (to filter groups, for example).
    """

    def __call__(
        self, policy: Policy, examples: list[Example], score: ScoreFn, generator: torch.Generator
    ) -> RolloutBatch: ...


@runtime_checkable
class Task(Protocol):
    """A source of prompts with verifiable answers.

    ``sample`` draws training examples with ``generator`` (so a seed fixes the data order);
    ``eval_examples`` returns the fixed held-out set.
    """

    def sample(self, n: int, generator: torch.Generator) -> list[Example]:
        """``n`` training examples drawn with ``generator`` (and no other randomness)."""
        ...

    def eval_examples(self) -> list[Example]:
        """The fixed held-out examples (never returned by :meth:`sample`)."""
        ...


@runtime_checkable
class Policy(Protocol):
    """A causal language model, as an ``nn.Module``.

    The trainer computes log-probabilities from ``hidden_states`` and ``output_weight`` through a
    logprob backend (so temperature is applied there, once); samplers use ``decode_step``.
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

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        """The trainable parameters (``nn.Module.parameters``)."""
        ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Tensors only: what checkpoints save (``nn.Module.state_dict``)."""
        ...

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Restore from :meth:`state_dict` (``nn.Module.load_state_dict``)."""
        ...


@runtime_checkable
class LogprobBackend(Protocol):
    """Computes log pi(target) (and optionally entropy) from hidden states and the output weight.

    ``logits = hidden @ weight.T / temperature``. Backends may set ``priority: int`` and
    ``supports(device) -> bool``; ``auto`` picks the highest-priority backend supporting the device.
    """

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
