"""``hf``: any Hugging Face causal language model, loaded from a local folder (nothing is downloaded).

The model is the submodule ``model`` (so the state dict is the model's, keys prefixed ``model.``).
Positions come from the attention mask (``cumsum(mask) - 1``, clamped at 0), so left-padded prompts
give the same hidden states as unpadded ones. ``decode_step`` keeps the model's KV cache in its state
and, after the first step, feeds only the tokens appended since the last call.

Needs the optional extra: ``pip install 'rlsdk[hf]'`` (transformers is imported lazily).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import rlsdk
from rlsdk import ConfigError, DecodeOutput
from rlsdk.validation import check_bool

__all__ = ["HFTokenizer", "HFPolicy", "register_policies"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Config fields (and their neutral values) of models whose logits are not ``hidden @ W.T``: Gemma-2
# soft-capping, Cohere and Granite scaling. The logprob backends would compute wrong log-probabilities.
_LOGIT_TRANSFORMS = {"final_logit_softcapping": (None,), "logit_scale": (None, 1.0), "logits_scaling": (None, 1.0)}


def _positions(attention_mask: Tensor) -> Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class HFTokenizer:
    """Adapts a ``transformers`` tokenizer to :class:`rlsdk.Tokenizer`.

    ``pad_token_id`` falls back to ``eos_token_id`` when the tokenizer has no pad token;
    ``vocab_size`` is ``len(tokenizer)`` (added tokens included; the model's output layer may be larger).

    Attributes:
        hf_tokenizer: The wrapped tokenizer (for chat templates and the like).
    """

    def __init__(self, hf_tokenizer: Any):
        if hf_tokenizer.eos_token_id is None:
            raise ConfigError(
                "the tokenizer under policy.path has no eos token; set eos_token in its tokenizer_config.json"
            )
        self.hf_tokenizer = hf_tokenizer
        self.eos_token_id = int(hf_tokenizer.eos_token_id)
        pad = hf_tokenizer.pad_token_id
        self.pad_token_id = int(pad) if pad is not None else self.eos_token_id
        self.vocab_size = len(hf_tokenizer)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self.hf_tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        """The text of ``ids``, skipping special tokens."""
        return self.hf_tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


@dataclass
class _CacheState:
    """What :meth:`HFPolicy.decode_step` hands back: the KV cache and how many columns it covers."""

    cache: Any
    length: int
    batch_size: int


class HFPolicy(nn.Module):
    """A Hugging Face causal LM as an rlsdk policy.

    ``hidden_states`` is ``model.base_model(...).last_hidden_state`` (after the final norm) and
    ``output_weight`` the weight of ``model.get_output_embeddings()``, so ``logits = hidden @ W.T``
    exactly as the model computes them. Models with a biased, soft-capped or scaled output layer are
    refused (their logits are not ``hidden @ W.T``).

    Args:
        path: Local folder with the model and tokenizer (``save_pretrained`` layout). Required.
        dtype: Parameter dtype: ``float32``, ``bfloat16`` or ``float16``.
        trust_remote_code: Allow custom model code shipped in the folder.
    """

    def __init__(self, path: str | None = None, dtype: str = "float32", trust_remote_code: bool = False):
        super().__init__()
        if dtype not in DTYPES:
            raise ConfigError(f"policy.dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        check_bool(trust_remote_code, "policy.trust_remote_code")
        if not path:
            raise ConfigError(
                "policy.path is required: a local folder holding a Hugging Face causal LM and its tokenizer"
            )
        folder = Path(str(path)).expanduser()
        if not folder.is_dir():
            raise ConfigError(
                f"policy.path {str(path)!r} is not a folder; give a local folder saved with save_pretrained "
                "(nothing is downloaded)"
            )
        try:
            import transformers
        except ImportError as exc:
            raise ConfigError("policy 'hf' needs transformers: pip install 'rlsdk[hf]'") from exc

        dtype_key = "dtype" if _version_at_least(transformers.__version__, (4, 56)) else "torch_dtype"
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                folder, local_files_only=True, trust_remote_code=trust_remote_code, **{dtype_key: DTYPES[dtype]}
            )
            hf_tokenizer = transformers.AutoTokenizer.from_pretrained(
                folder, local_files_only=True, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"policy.path {str(path)!r}: could not load a causal LM and tokenizer: {exc}") from exc

        head = model.get_output_embeddings()
        if head is None or not isinstance(getattr(head, "weight", None), Tensor):
            raise ConfigError(f"policy.path {str(path)!r}: the model has no output embedding layer with a weight")
        if getattr(head, "bias", None) is not None:
            raise ConfigError(
                f"policy.path {str(path)!r}: the model's output layer has a bias, which rlsdk's logprob "
                "backends (logits = hidden @ W.T) do not support"
            )
        for field, neutral in _LOGIT_TRANSFORMS.items():
            value = getattr(model.config, field, None)
            if value not in neutral:
                raise ConfigError(
                    f"policy.path {str(path)!r}: the model transforms its logits ({field}={value}), which "
                    "rlsdk's logprob backends (logits = hidden @ W.T) do not support"
                )
        self.model = model
        self.tokenizer = HFTokenizer(hf_tokenizer)
        params = inspect.signature(model.base_model.forward).parameters
        # transformers >= 5.x names the KV cache ``cache``; earlier versions ``past_key_values``.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def _base_forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, **kwargs: Any) -> Any:
        return self.model.base_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        )

    def hidden_states(self, sequences: Tensor, attention_mask: Tensor) -> Tensor:
        """Final hidden states (after the model's last norm).

        Args:
            sequences: ``[B, S]`` long token ids (prompts left-padded).
            attention_mask: ``[B, S]`` 1 on real tokens.

        Returns:
            ``[B, S, H]`` in the model's dtype.
        """
        if sequences.dim() != 2 or attention_mask.shape != sequences.shape:
            raise ValueError(
                f"hf policy: expected sequences and attention_mask of the same shape [B, S]; got "
                f"{tuple(sequences.shape)} and {tuple(attention_mask.shape)}"
            )
        mask = attention_mask.long()
        return self._base_forward(sequences, mask, _positions(mask), use_cache=False).last_hidden_state

    def output_weight(self) -> Tensor:
        """``[V, H]`` weight of the model's output layer."""
        return self.model.get_output_embeddings().weight

    def decode_step(self, sequences: Tensor, attention_mask: Tensor, state: Any = None) -> DecodeOutput:
        """Next-token logits ``[B, V]`` (float32) at the last position, reusing the KV cache.

        On the first call (``state`` None) the whole prefix is run; on later calls only the columns
        appended since the previous call are fed, with their position ids and the full attention
        mask. The cache inside the state grows in place, so pass back the latest state only; a state
        that does not fit (other batch size, shorter sequences, a cache that moved on) starts over.
        """
        mask = attention_mask.long()
        positions = _positions(mask)
        fits = (
            isinstance(state, _CacheState)
            and state.batch_size == sequences.shape[0]
            and state.length < sequences.shape[1]
            # The cache grows in place: an older state whose cache has moved on cannot be reused.
            and getattr(state.cache, "get_seq_length", lambda: state.length)() == state.length
        )
        start = state.length if fits else 0
        kwargs: dict[str, Any] = {"use_cache": True}
        if fits:
            kwargs[self._cache_arg] = state.cache
        out = self._base_forward(sequences[:, start:], mask, positions[:, start:], **kwargs)
        cache = getattr(out, self._cache_arg, None)
        if cache is None:  # older outputs always call it past_key_values
            cache = out.past_key_values
        logits = F.linear(out.last_hidden_state[:, -1], self.output_weight()).float()
        return DecodeOutput(logits=logits, state=_CacheState(cache, sequences.shape[1], sequences.shape[0]))


def _version_at_least(version: str, minimum: tuple[int, int]) -> bool:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts) >= minimum


@rlsdk.hookimpl
def register_policies(register) -> None:  # noqa: ANN001 - the hook's callback
    """Register the ``hf`` policy."""
    register("hf", HFPolicy)
