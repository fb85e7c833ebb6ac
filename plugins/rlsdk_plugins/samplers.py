"""Samplers: turn examples into a scored rollout.

``group``: each prompt is repeated ``n`` times (a GRPO group), completions are sampled token by token
with temperature and nucleus (top-p) filtering, and generation stops at EOS or ``max_new_tokens``.

Layout of the returned :class:`rlsdk.RolloutBatch` (``B = n * len(examples)``):

- ``sequences [B, P + T]``: prompt left-padded to ``P`` tokens, then the completion right-padded to
  ``T`` (the longest completion of the batch, at most ``max_new_tokens``);
- ``mask [B, T]``: 1 on completion tokens up to and including EOS (EOS is trained on, so the policy
  learns when to stop);
- ``group_ids [B]``: the index of the prompt; ``truncated [B]``: no EOS within ``max_new_tokens``.

Temperature 0 means greedy decoding. The trainer reads ``temperature`` to compute log-probabilities
with the same scaling (applied once, in the logprob backend).
"""

from __future__ import annotations

import torch
from torch import Tensor

import rlsdk
from rlsdk import Example, RolloutBatch, ScoreFn
from rlsdk.validation import check_int, check_number


def top_p_filter(probs: Tensor, top_p: float) -> Tensor:
    """Zero the tail of ``probs [B, V]`` outside the smallest set whose mass reaches ``top_p``; renormalise.

    The most likely token is always kept.
    """
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs
    sorted_probs = torch.where(mass_before < top_p, sorted_probs, torch.zeros_like(sorted_probs))
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return kept / kept.sum(-1, keepdim=True)


class GroupSampler:
    """``n`` completions per prompt, sampled with temperature and top-p.

    Args:
        n: Completions per prompt (the group size).
        temperature: Sampling temperature; 0 is greedy. Also used for the training log-probs.
        top_p: Nucleus sampling mass in (0, 1].
        max_new_tokens: Token limit per completion.
    """

    def __init__(self, n: int = 8, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 16):
        self.n = check_int(n, "sampler.n", low=1)
        self.temperature = check_number(temperature, "sampler.temperature", low=0.0)  # 0 = greedy
        self.top_p = check_number(top_p, "sampler.top_p", low=0.0, high=1.0, low_open=True)
        self.max_new_tokens = check_int(max_new_tokens, "sampler.max_new_tokens", low=1)

    @torch.no_grad()
    def __call__(
        self, policy: rlsdk.Policy, examples: list[Example], score: ScoreFn, generator: torch.Generator
    ) -> RolloutBatch:
        tok = policy.tokenizer
        device = policy.output_weight().device
        prompts = [ex.prompt for ex in examples for _ in range(self.n)]
        metadata = [ex.reward_metadata() for ex in examples for _ in range(self.n)]
        group_ids = torch.arange(len(examples)).repeat_interleave(self.n)

        # Left-pad the prompts to a common length P.
        encoded = [tok.encode(p) for p in prompts]
        p_len = max(len(ids) for ids in encoded)
        b = len(encoded)
        seq = torch.full((b, p_len), tok.pad_token_id, dtype=torch.long)
        attn = torch.zeros((b, p_len), dtype=torch.long)
        for i, ids in enumerate(encoded):
            seq[i, p_len - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attn[i, p_len - len(ids) :] = 1
        seq, attn = seq.to(device), attn.to(device)

        done = torch.zeros(b, dtype=torch.bool, device=device)
        state = None
        new_tokens, new_mask = [], []
        for _ in range(self.max_new_tokens):
            out = policy.decode_step(seq, attn, state)
            state = out.state
            logits = out.logits.float()
            if self.temperature == 0:
                nxt = logits.argmax(-1)
            else:
                probs = top_p_filter(torch.softmax(logits / self.temperature, dim=-1), self.top_p)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(device)
            live = ~done
            nxt = torch.where(live, nxt, torch.full_like(nxt, tok.pad_token_id))
            new_tokens.append(nxt)
            new_mask.append(live.long())
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            attn = torch.cat([attn, live.long()[:, None]], dim=1)
            done = done | (nxt == tok.eos_token_id)
            if bool(done.all()):
                break

        completion = torch.stack(new_tokens, dim=1)
        mask = torch.stack(new_mask, dim=1).float()
        completions = [tok.decode([int(t) for t, m in zip(row, mrow) if m > 0]) for row, mrow in zip(completion, mask)]
        rollout = RolloutBatch(
            rewards=torch.zeros(b),
            group_ids=group_ids,
            mask=mask.cpu(),
            sequences=seq.cpu(),
            attention_mask=attn.cpu(),
            prompts=prompts,
            completions=completions,
            metadata=metadata,
            truncated=(~done).cpu(),
        )
        return score(rollout)


@rlsdk.hookimpl
def register_samplers(register):
    register("group", GroupSampler)
