"""``tiny``: a small character-level causal transformer that trains on a CPU in minutes.

A pre-norm GPT (GPT-2 layout: learned absolute positions, LayerNorm, GELU MLP) built from
``torch.nn`` primitives. Token ids: ``0`` = pad, ``1`` = eos, then the characters of ``alphabet`` in
order. Positions come from the attention mask (``position = cumsum(mask) - 1``, clamped at 0), and
padded keys are masked out of attention, so a sequence's hidden states do not depend on how much left
padding it got. The output layer is untied and initialised small, so the initial policy is close to
uniform.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import rlsdk
from rlsdk import ConfigError, DecodeOutput
from rlsdk.validation import check_int, check_memory, check_number

__all__ = ["CharTokenizer", "TinyPolicy", "positions_from_mask", "parameter_count", "register_policies", "check_config"]

DEFAULT_ALPHABET = "0123456789 +-*/=<>()[]:;,.?!abcdefghijklmnopqrstuvwxyz"


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """``[B, S]`` position ids ``cumsum(mask) - 1`` clamped at 0: the first real token is at position 0."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class CharTokenizer:
    """One token per character: ``0`` = pad, ``1`` = eos, then ``alphabet[i]`` = ``i + 2``.

    Args:
        alphabet: The characters the policy can read and write (no duplicates).
    """

    pad_token_id: int = 0
    eos_token_id: int = 1

    def __init__(self, alphabet: str = DEFAULT_ALPHABET):
        self.alphabet = alphabet
        self.vocab_size = len(alphabet) + 2
        self._ids = {ch: i + 2 for i, ch in enumerate(alphabet)}

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens); a character outside the alphabet is a ConfigError."""
        try:
            return [self._ids[ch] for ch in text]
        except KeyError as exc:
            raise ConfigError(
                f"character {exc.args[0]!r} of text {text!r} is not in policy.alphabet {self.alphabet!r}; "
                "add it to policy.alphabet"
            ) from None

    def decode(self, ids: list[int]) -> str:
        """The text of ``ids``, skipping pad and eos."""
        chars = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside the tiny vocabulary [0, {self.vocab_size})")
            if i >= 2:
                chars.append(self.alphabet[i - 2])
        return "".join(chars)


class _Block(nn.Module):
    """``x + attn(ln1(x))`` then ``x + mlp(ln2(x))`` (pre-norm, GPT-2)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model, bias=False)
        self.fc_out = nn.Linear(4 * d_model, d_model, bias=False)

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        """``x [B, S, D]``, ``attn_mask [B, 1, S, S]`` bool (True = may attend) -> ``[B, S, D]``."""
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, s, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # [B, heads, S, D/heads]
        x = x + self.proj(y.transpose(1, 2).reshape(b, s, d))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class TinyPolicy(nn.Module):
    """A small pre-norm causal transformer over characters.

    ``h = LN_f(blocks(E_tok[x] + E_pos[cumsum(mask) - 1]))``, ``logits = h W_out^T``. Attention of
    query ``i`` to key ``j`` is allowed when ``j <= i`` and ``mask[j] = 1``; every query may also attend
    to itself, so padded query positions (whose every key is masked) stay finite. Weights are drawn
    from the global torch RNG: ``N(0, init_std)``, residual output projections scaled by
    ``1/sqrt(2 n_layers)`` (GPT-2), the output layer by a further 0.1 (a near-uniform initial policy).

    Args:
        alphabet: Characters of the vocabulary (ids 2.. in order; 0 = pad, 1 = eos).
        d_model: Hidden size ``H``.
        n_layers: Transformer blocks.
        n_heads: Attention heads (must divide ``d_model``).
        max_len: Longest sequence of real tokens (size of the position table).
        init_std: Standard deviation of the weight initialisation.
    """

    def __init__(
        self,
        alphabet: str = DEFAULT_ALPHABET,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        max_len: int = 64,
        init_std: float = 0.02,
    ):
        super().__init__()
        _check_options(alphabet, d_model, n_layers, n_heads, max_len, init_std)
        self.tokenizer = CharTokenizer(alphabet)
        self.max_len = max_len
        vocab = self.tokenizer.vocab_size
        self.tok_emb = nn.Embedding(vocab, d_model)
        self.pos_emb = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)
        self._init_weights(init_std, n_layers)

    def check_prompts(self, prompts: list[str], max_new_tokens: int | None) -> None:
        """Check, before training, that every prompt is in ``policy.alphabet`` and fits ``max_len``
        with ``max_new_tokens`` completion tokens; raise :class:`rlsdk.ConfigError` otherwise."""
        longest = max(prompts, key=len, default="")
        for prompt in prompts:
            self.tokenizer.encode(prompt)  # names a character outside the alphabet
        if len(longest) + (max_new_tokens or 0) > self.max_len:
            raise ConfigError(
                f"policy.max_len={self.max_len} (tiny) is too short: the prompt {longest!r} has {len(longest)} tokens "
                f"and sampler.max_new_tokens={max_new_tokens}; raise policy.max_len to at least "
                f"{len(longest) + (max_new_tokens or 0)} or lower sampler.max_new_tokens"
            )

    def _init_weights(self, std: float, n_layers: int) -> None:
        for name, param in self.named_parameters():
            if param.dim() < 2:
                continue  # LayerNorm weights stay 1, biases 0
            scale = 1.0
            if name.endswith(("proj.weight", "fc_out.weight")):
                scale = 1.0 / math.sqrt(2 * n_layers)
            elif name == "lm_head.weight":
                scale = 0.1
            nn.init.normal_(param, mean=0.0, std=std * scale)

    def hidden_states(self, sequences: Tensor, attention_mask: Tensor) -> Tensor:
        """Final hidden states after the last LayerNorm.

        Args:
            sequences: ``[B, S]`` long token ids (prompts left-padded).
            attention_mask: ``[B, S]`` 1 on real tokens.

        Returns:
            ``[B, S, H]``; rows at padded positions are finite but meaningless.
        """
        if sequences.dim() != 2 or attention_mask.shape != sequences.shape:
            raise ValueError(
                f"tiny policy: expected sequences and attention_mask of the same shape [B, S]; got "
                f"{tuple(sequences.shape)} and {tuple(attention_mask.shape)}"
            )
        s = sequences.shape[1]
        valid = attention_mask.bool()
        positions = positions_from_mask(attention_mask)
        if positions.numel() and int(positions.max()) >= self.max_len:
            raise ValueError(
                f"tiny policy: a sequence has {int(positions.max()) + 1} real tokens, more than "
                f"policy.max_len={self.max_len}; raise policy.max_len"
            )
        causal = torch.ones(s, s, dtype=torch.bool, device=sequences.device).tril()
        diagonal = torch.eye(s, dtype=torch.bool, device=sequences.device)
        attn_mask = ((causal & valid[:, None, :]) | diagonal)[:, None]  # [B, 1, S, S]
        x = self.tok_emb(sequences) + self.pos_emb(positions)
        for block in self.blocks:
            x = block(x, attn_mask)
        return self.ln_f(x)

    def output_weight(self) -> Tensor:
        """``[V, H]`` weight of the (untied) output layer."""
        return self.lm_head.weight

    def decode_step(self, sequences: Tensor, attention_mask: Tensor, state: Any = None) -> DecodeOutput:
        """Next-token logits ``[B, V]`` at the last position; recomputes the whole prefix (state stays None)."""
        hidden = self.hidden_states(sequences, attention_mask)[:, -1]
        return DecodeOutput(logits=hidden @ self.output_weight().T, state=None)


def _check_options(alphabet: str, d_model: int, n_layers: int, n_heads: int, max_len: int, init_std: float) -> None:
    if not isinstance(alphabet, str) or not alphabet:
        raise ConfigError(f"policy.alphabet must be a non-empty string of characters; got {alphabet!r}")
    duplicates = sorted({ch for ch in alphabet if alphabet.count(ch) > 1})
    if duplicates:
        raise ConfigError(f"policy.alphabet {alphabet!r} repeats the characters {duplicates}; each must appear once")
    for option, value in (("d_model", d_model), ("n_layers", n_layers), ("n_heads", n_heads), ("max_len", max_len)):
        check_int(value, f"policy.{option}", low=1)
    if d_model % n_heads:
        raise ConfigError(f"policy.n_heads={n_heads} must divide policy.d_model={d_model}")
    check_number(init_std, "policy.init_std", low=0.0, low_open=True)


def parameter_count(vocab: int, d_model: int, n_layers: int, max_len: int) -> int:
    """Parameters of a :class:`TinyPolicy`: both embeddings, the blocks, the final LayerNorm and the untied
    output layer.

    Per block: ``qkv`` 3 H^2, ``proj`` H^2, ``fc`` and ``fc_out`` 4 H^2 each (12 H^2, no biases) and two
    LayerNorms (4 H).
    """
    return (
        vocab * d_model + max_len * d_model + n_layers * (12 * d_model**2 + 4 * d_model) + 2 * d_model + vocab * d_model
    )


@rlsdk.hookimpl
def register_policies(register) -> None:  # noqa: ANN001 - the hook's callback
    """Register the ``tiny`` policy."""
    register("tiny", TinyPolicy)


@rlsdk.hookimpl
def check_config(config: dict[str, Any]) -> None:
    """For ``policy.name=tiny``: its options, that the policy fits in memory, and that completions fit ``max_len``.

    The memory estimate counts float32 parameters, their gradients, AdamW's two moments and, with
    ``train.reference``, the reference copy (activations are left out: it is a lower bound). Prompt
    lengths are checked later, by the trainer, with the task's real prompts; here only
    ``sampler.max_new_tokens`` is compared with ``max_len`` (a prompt takes at least one position).
    """
    policy = config.get("policy") or {}
    if policy.get("name") != "tiny":
        return
    defaults = {k: p.default for k, p in inspect.signature(TinyPolicy.__init__).parameters.items() if k != "self"}
    options = {**defaults, **{k: v for k, v in policy.items() if k != "name"}}
    _check_options(**options)  # the constructor's checks, now rather than when the run starts
    d_model, n_layers, max_len = options["d_model"], options["n_layers"], options["max_len"]
    train = config.get("train") or {}
    reference = train.get("reference", True) is True
    copies = 4 + reference  # weights, gradients, two Adam moments (+ the reference's weights)
    nbytes = 4 * copies * parameter_count(len(options["alphabet"]) + 2, d_model, n_layers, max_len)
    parts = "parameters, gradients, Adam state" + (" and the reference" if reference else "")
    check_memory(
        nbytes,
        f"policy (tiny) with d_model={d_model}, n_layers={n_layers} ({parts})",
        train.get("device", "cpu"),
        hint="lower policy.d_model or policy.n_layers",
    )
    new_tokens = (config.get("sampler") or {}).get("max_new_tokens")
    if isinstance(new_tokens, int) and not isinstance(new_tokens, bool) and new_tokens >= max_len:
        raise ConfigError(
            f"sampler.max_new_tokens={new_tokens} does not fit policy.max_len={max_len} (tiny): a prompt and its "
            f"completion share the max_len positions, so max_new_tokens must be < {max_len}; raise policy.max_len "
            "or lower sampler.max_new_tokens"
        )
