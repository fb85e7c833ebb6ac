"""Generation engines: prompt token ids and sampling settings in, completions out.

``inprocess``: samples from the training policy itself, in this process, token by token with its
``decode_step`` (the policy's cache carried between steps). Each prompt is repeated ``n`` times (the
``n`` completions of prompt ``i`` are rows ``i * n`` to ``i * n + n - 1``), left-padded to the longest,
and all rows are decoded together until every row has produced EOS or ``max_new_tokens`` tokens.
Per step, with logits ``z`` of the policy::

    greedy (temperature 0):  y = argmax z                  logp = log_softmax(z)[y]
    otherwise:               p = top_p(softmax(z / tau))   y ~ p (torch.multinomial on the CPU, with the generator)
                             logp = log p[y]

``top_p`` keeps the smallest set of most likely tokens whose mass reaches ``top_p`` (the most likely
token always) and renormalises (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration").
Sampling draws on the CPU, so a seed gives the same completions on every device.

``update_weights(policy, version)`` keeps a reference to ``policy`` (no copy: it samples from the
weights being trained) and stamps later completions with ``version``.
"""

from __future__ import annotations

import torch
from torch import Tensor

import rlsdk
from rlsdk import ConfigError, Generation, SamplingParams, Tokenizer

__all__ = ["InProcessEngine", "top_p_filter", "register_engines"]


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


class InProcessEngine:
    """Samples from the training policy in this process (see the module docstring)."""

    def __init__(self) -> None:
        self.policy: rlsdk.Policy | None = None
        self.version = 0

    @property
    def tokenizer(self) -> Tokenizer:
        """The policy's tokenizer."""
        return self._policy().tokenizer

    def _policy(self) -> rlsdk.Policy:
        if self.policy is None:
            raise ConfigError("engine 'inprocess' has no policy yet: call engine.update_weights(policy, version) first")
        return self.policy

    def update_weights(self, policy: rlsdk.Policy, version: int) -> None:
        """Sample from ``policy`` (kept by reference) and stamp completions with ``version``."""
        self.policy, self.version = policy, int(version)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams, generator: torch.Generator) -> Generation:
        """``params.n`` completions of each prompt; see the module docstring for the sampling rule."""
        policy = self._policy()
        tok = policy.tokenizer
        device = policy.output_weight().device
        rows = [ids for ids in prompts for _ in range(params.n)]
        b = len(rows)
        if b == 0:
            return Generation([], [], [], [])
        p_len = max(len(ids) for ids in rows)
        seq = torch.full((b, p_len), tok.pad_token_id, dtype=torch.long)
        attn = torch.zeros((b, p_len), dtype=torch.long)
        for i, ids in enumerate(rows):
            if ids:
                seq[i, p_len - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attn[i, p_len - len(ids) :] = 1
        seq, attn = seq.to(device), attn.to(device)

        done = torch.zeros(b, dtype=torch.bool, device=device)
        state = None
        tokens, logprobs, live_steps = [], [], []
        for _ in range(params.max_new_tokens):
            out = policy.decode_step(seq, attn, state)
            state = out.state
            logits = out.logits.float()
            if params.temperature == 0:
                nxt = logits.argmax(-1)
                log_p = torch.log_softmax(logits, dim=-1)
            else:
                probs = top_p_filter(torch.softmax(logits / params.temperature, dim=-1), params.top_p)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(device)
                log_p = torch.log(probs)
            live = ~done
            nxt = torch.where(live, nxt, torch.full_like(nxt, tok.pad_token_id))
            tokens.append(nxt)
            logprobs.append(log_p.gather(-1, nxt[:, None]).squeeze(-1))
            live_steps.append(live)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            attn = torch.cat([attn, live.long()[:, None]], dim=1)
            done = done | (nxt == tok.eos_token_id)
            if bool(done.all()):
                break
        lengths = torch.stack(live_steps, dim=1).sum(1).tolist()
        ids = torch.stack(tokens, dim=1).tolist()
        lps = torch.stack(logprobs, dim=1).tolist()
        return Generation(
            token_ids=[row[:n] for row, n in zip(ids, lengths)],
            logprobs=[row[:n] for row, n in zip(lps, lengths)],
            finish_reasons=["stop" if d else "length" for d in done.tolist()],
            weight_versions=[self.version] * b,
        )


@rlsdk.hookimpl
def register_engines(register):  # noqa: ANN001 - the hook's callback
    """Register ``inprocess``."""
    register("inprocess", InProcessEngine)
