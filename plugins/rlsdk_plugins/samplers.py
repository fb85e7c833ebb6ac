"""Samplers: turn examples into a scored rollout, through a generation engine.

``group``: asks the engine for ``n`` completions of each prompt (a GRPO group) with temperature and
nucleus (top-p) filtering, stopping at EOS or ``max_new_tokens``, and lays them out as a batch.

Layout of the returned :class:`rlsdk.RolloutBatch` (``B = n * len(examples)``):

- ``sequences [B, P + T]``: prompt left-padded to ``P`` tokens, then the completion right-padded to
  ``T`` (the longest completion of the batch, at most ``max_new_tokens``);
- ``mask [B, T]``: 1 on completion tokens up to and including EOS (EOS is trained on, so the policy
  learns when to stop);
- ``group_ids [B]``: the index of the prompt; ``truncated [B]``: no EOS within ``max_new_tokens``;
- ``engine_logprobs [B, T]`` and ``weight_versions [B]``: what the engine reports.

Temperature 0 means greedy decoding. The trainer reads ``params.temperature`` to compute
log-probabilities with the same scaling (applied once, in the logprob backend).
"""

from __future__ import annotations

import torch

import rlsdk
from rlsdk import Example, GenerationEngine, RolloutBatch, SamplingParams, ScoreFn

__all__ = ["GroupSampler", "layout", "register_samplers"]


def layout(
    engine: GenerationEngine, examples: list[Example], params: SamplingParams, generator: torch.Generator
) -> RolloutBatch:
    """The completions of ``examples`` from ``engine`` as an unscored :class:`rlsdk.RolloutBatch` (see
    the module docstring for the layout); ``rewards`` are zeros until the sampler scores them."""
    tok = engine.tokenizer
    n = params.n
    encoded = [tok.encode(ex.prompt) for ex in examples]
    generation = engine.generate(encoded, params, generator)
    b = len(generation.token_ids)
    if b != n * len(examples):
        raise ValueError(f"the engine returned {b} completions for {len(examples)} prompts x n={n}")
    prompts = [ex.prompt for ex in examples for _ in range(n)]
    metadata = [ex.reward_metadata() for ex in examples for _ in range(n)]
    p_len = max((len(ids) for ids in encoded), default=0)
    t_len = max((len(ids) for ids in generation.token_ids), default=0)
    seq = torch.full((b, p_len + t_len), tok.pad_token_id, dtype=torch.long)
    attn = torch.zeros((b, p_len + t_len), dtype=torch.long)
    mask = torch.zeros((b, t_len))
    engine_logprobs = torch.zeros((b, t_len))
    for i, (ids, completion, lps) in enumerate(
        zip((e for e in encoded for _ in range(n)), generation.token_ids, generation.logprobs)
    ):
        k = len(completion)
        seq[i, p_len - len(ids) : p_len] = torch.tensor(ids, dtype=torch.long)
        attn[i, p_len - len(ids) : p_len + k] = 1
        seq[i, p_len : p_len + k] = torch.tensor(completion, dtype=torch.long)
        mask[i, :k] = 1.0
        engine_logprobs[i, :k] = torch.tensor(lps, dtype=torch.float32)
    return RolloutBatch(
        rewards=torch.zeros(b),
        group_ids=torch.arange(len(examples)).repeat_interleave(n),
        mask=mask,
        sequences=seq,
        attention_mask=attn,
        prompts=prompts,
        completions=[tok.decode(ids) for ids in generation.token_ids],
        metadata=metadata,
        truncated=torch.tensor([r == "length" for r in generation.finish_reasons], dtype=torch.bool),
        engine_logprobs=engine_logprobs,
        weight_versions=torch.tensor(generation.weight_versions, dtype=torch.long),
    )


class GroupSampler:
    """``n`` completions per prompt, sampled with temperature and top-p.

    Args:
        n: Completions per prompt (the group size).
        temperature: Sampling temperature; 0 is greedy. Also used for the training log-probs.
        top_p: Nucleus sampling mass in (0, 1].
        max_new_tokens: Token limit per completion.

    Attributes:
        params: The four options as :class:`rlsdk.SamplingParams`.
    """

    def __init__(self, n: int = 8, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 16):
        self.params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)

    def eval_params(self, temperature: float) -> SamplingParams:
        """One completion per prompt at ``temperature``."""
        return self.params.replace(n=1, temperature=temperature)

    def __call__(
        self,
        engine: GenerationEngine,
        examples: list[Example],
        score: ScoreFn,
        generator: torch.Generator,
        params: SamplingParams,
    ) -> RolloutBatch:
        """The completions of ``examples`` with ``params``, scored."""
        return score(layout(engine, examples, params, generator))


@rlsdk.hookimpl
def register_samplers(register):  # noqa: ANN001 - the hook's callback
    """Register ``group``."""
    register("group", GroupSampler)
