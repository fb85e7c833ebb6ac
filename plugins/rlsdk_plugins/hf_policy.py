"""``hf``: any Hugging Face causal language model, loaded from a local folder (nothing is downloaded).

The model is the submodule ``model`` (so the state dict is the model's, keys prefixed ``model.``).
Positions come from the attention mask (``cumsum(mask) - 1``, clamped at 0), so left-padded prompts
give the same hidden states as unpadded ones. ``decode_step`` keeps the model's KV cache in its state
and, after the first step, feeds only the tokens appended since the last call.

Loading checks what would otherwise fail later with an obscure error (a folder without tokenizer
files gives an empty tokenizer, every prompt tokenises to nothing and a reshape of 0 elements fails
mid-run): the tokenizer has ordinary tokens, an eos token, turns a probe text into tokens and back
into non-empty text, and produces no id beyond the model's output layer, whose row count must match
the config's ``vocab_size``. :meth:`HFPolicy.check_prompts` checks a run's prompts before training.

Needs the optional extra: ``pip install 'rlsdk[hf]'`` (transformers is imported lazily).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import rlsdk
from rlsdk import ConfigError, DecodeOutput
from rlsdk.validation import check_bool, check_memory

__all__ = ["HFTokenizer", "HFPolicy", "register_policies"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Config fields (and their neutral values) of models whose logits are not ``hidden @ W.T``: Gemma-2
# soft-capping, Cohere and Granite scaling. The logprob backends would compute wrong log-probabilities.
_LOGIT_TRANSFORMS = {"final_logit_softcapping": (None,), "logit_scale": (None, 1.0), "logits_scaling": (None, 1.0)}

# Text every usable tokenizer turns into tokens and back into (perhaps normalised) non-empty text.
_PROBE = "Hello, world 123"

# Names of the files tokenizers are saved in; only used to explain a tokenizer that fails to load or check.
_TOKENIZER_FILES = ("tokenizer*", "*vocab*", "merges.txt", "*.model", "*.tiktoken", "tekken.json")
_NO_TOKENIZER_FILES = (
    "the folder has no tokenizer files (tokenizer.json, tokenizer_config.json, vocab files): save the "
    "tokenizer there with tokenizer.save_pretrained(path)"
)


def _positions(attention_mask: Tensor) -> Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _round_trip(hf_tokenizer: Any, text: str) -> str | None:
    """What goes wrong when ``text`` is encoded and decoded; None when it gives tokens and non-empty text."""
    try:
        ids = hf_tokenizer.encode(text, add_special_tokens=False)
    except Exception as exc:  # noqa: BLE001 - `tokenizers` raises a bare Exception (e.g. no unknown token)
        return f"encoding {text!r} fails ({_one_line(exc)})"
    if not ids:
        return f"{text!r} encodes to no tokens"
    if not hf_tokenizer.decode(ids, skip_special_tokens=True).strip():
        return f"{text!r} encodes to {list(ids)}, which decodes to empty text"
    return None


def _tokenizer_problem(hf_tokenizer: Any, rows: int) -> str | None:
    """What makes ``hf_tokenizer`` unusable with an output layer of ``rows`` rows (with its fix), or None.

    The round trip need not be exact: tokenizers may normalise text (lower case, unicode forms, spaces,
    unknown tokens), which is harmless; text that vanishes is not. A narrow vocabulary without an
    unknown token may not cover the probe text; then text made of its own first tokens must round-trip.
    """
    vocab = hf_tokenizer.get_vocab()
    special = set(hf_tokenizer.all_special_tokens)
    ordinary = sorted(i for token, i in vocab.items() if token not in special)
    if len(hf_tokenizer) == 0 or not ordinary:
        return (
            f"the tokenizer has no ordinary tokens (len(tokenizer) = {len(hf_tokenizer)}, special tokens only); "
            "save the model's own tokenizer there with tokenizer.save_pretrained(path)"
        )
    if hf_tokenizer.eos_token_id is None:
        return "the tokenizer has no eos token; set eos_token in its tokenizer_config.json"
    problem = _round_trip(hf_tokenizer, _PROBE)
    if problem is not None and _round_trip(hf_tokenizer, hf_tokenizer.decode(ordinary[:16])) is None:
        problem = None
    if problem is not None:
        return f"the tokenizer loses text: {problem}; save a working one there with tokenizer.save_pretrained(path)"
    ids = [len(hf_tokenizer) - 1, hf_tokenizer.eos_token_id, hf_tokenizer.pad_token_id or 0, *vocab.values()]
    if max(ids) >= rows:
        return (
            f"the tokenizer has token ids up to {max(ids)} but the model's output layer has only {rows} rows; "
            "use the tokenizer the model was trained with, or resize the model with "
            "model.resize_token_embeddings(len(tokenizer)) and save it again"
        )
    return None


def _max_positions(config: Any) -> int | None:
    """The longest sequence the model's config allows (``max_position_embeddings`` or ``n_positions``)."""
    for field in ("max_position_embeddings", "n_positions"):
        value = getattr(config, field, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


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
    refused (their logits are not ``hidden @ W.T``), and so are broken folders: a config whose
    ``vocab_size`` disagrees with the output layer, and a missing or unusable tokenizer (see the
    module docstring).

    Args:
        path: Local folder with the model and tokenizer (``save_pretrained`` layout). Required.
        dtype: Parameter dtype: ``float32``, ``bfloat16`` or ``float16``.
        trust_remote_code: Allow custom model code shipped in the folder.

    Attributes:
        model: The ``transformers`` causal LM.
        tokenizer: Its tokenizer, as an :class:`HFTokenizer`.
        path: ``policy.path`` as given (for messages).
        max_positions: The config's ``max_position_embeddings`` (or ``n_positions``); None if it has none.

    Raises:
        ConfigError: A bad option, a folder that does not load, or a model or tokenizer that fails the checks.
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

        where = f"policy.path {str(path)!r}"
        dtype_key = "dtype" if _version_at_least(transformers.__version__, (4, 56)) else "torch_dtype"
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                folder, local_files_only=True, trust_remote_code=trust_remote_code, **{dtype_key: DTYPES[dtype]}
            )
        except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: weights that do not fit config.json
            raise ConfigError(f"{where}: could not load a causal LM: {_one_line(exc)}") from exc

        head = model.get_output_embeddings()
        if head is None or not isinstance(getattr(head, "weight", None), Tensor):
            raise ConfigError(f"{where}: the model has no output embedding layer with a weight")
        rows, hidden = head.weight.shape
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        vocab_size = getattr(config, "vocab_size", None)
        if rows == 0 or hidden == 0:
            raise ConfigError(
                f"{where}: the model's output layer is empty (shape [{rows}, {hidden}]); set vocab_size and "
                "hidden_size in config.json and save the model again"
            )
        if isinstance(vocab_size, int) and vocab_size != rows:
            raise ConfigError(
                f"{where}: the model's config says vocab_size={vocab_size} but its output layer has {rows} rows; "
                f"set vocab_size to {rows} in config.json"
            )
        if getattr(head, "bias", None) is not None:
            raise ConfigError(
                f"{where}: the model's output layer has a bias, which rlsdk's logprob "
                "backends (logits = hidden @ W.T) do not support"
            )
        for field, neutral in _LOGIT_TRANSFORMS.items():
            value = getattr(model.config, field, None)
            if value not in neutral:
                raise ConfigError(
                    f"{where}: the model transforms its logits ({field}={value}), which "
                    "rlsdk's logprob backends (logits = hidden @ W.T) do not support"
                )

        cause = None
        try:
            hf_tokenizer = transformers.AutoTokenizer.from_pretrained(
                folder, local_files_only=True, trust_remote_code=trust_remote_code
            )
            problem = _tokenizer_problem(hf_tokenizer, rows)
        except Exception as exc:  # noqa: BLE001 - malformed files raise KeyError, `tokenizers` a bare Exception
            problem = f"could not load the tokenizer ({type(exc).__name__}: {_one_line(exc)}); save it again with "
            problem, cause = problem + "tokenizer.save_pretrained(path)", exc
        if problem is not None:
            if not any(any(folder.glob(pattern)) for pattern in _TOKENIZER_FILES):
                problem = _NO_TOKENIZER_FILES  # the root cause: transformers may build an empty tokenizer
            raise ConfigError(f"{where}: {problem}") from cause

        self.model = model
        self.tokenizer = HFTokenizer(hf_tokenizer)
        self.path = str(path)
        self.max_positions = _max_positions(config)
        params = inspect.signature(model.base_model.forward).parameters
        # transformers >= 5.x names the KV cache ``cache``; earlier versions ``past_key_values``.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def check_prompts(self, prompts: list[str], max_new_tokens: int | None) -> None:
        """Check, before training, that every prompt tokenises to something that fits the model.

        Args:
            prompts: The run's prompts.
            max_new_tokens: The sampler's ``max_new_tokens`` (None: only the prompt must fit).

        Raises:
            ConfigError: A prompt cannot be tokenised or tokenises to no tokens, or its tokens plus
                ``max_new_tokens`` exceed the model's ``max_position_embeddings`` (``n_positions``).
        """
        where = f"policy 'hf' (policy.path {self.path!r})"
        for prompt in dict.fromkeys(prompts):
            shown = repr(prompt if len(prompt) <= 60 else prompt[:57] + "...")
            try:
                n_tokens = len(self.tokenizer.encode(prompt))
            except Exception as exc:  # noqa: BLE001 - `tokenizers` raises a bare Exception
                raise ConfigError(
                    f"{where}: the prompt {shown} cannot be tokenised ({_one_line(exc)}); use a tokenizer that "
                    "covers its characters or has an unknown token"
                ) from exc
            if n_tokens == 0:
                raise ConfigError(
                    f"{where}: the prompt {shown} tokenises to no tokens; give non-empty prompts and a tokenizer "
                    "that covers their text"
                )
            if self.max_positions is not None and n_tokens + (max_new_tokens or 0) > self.max_positions:
                raise ConfigError(
                    f"{where}: the prompt {shown} has {n_tokens} tokens, which with sampler.max_new_tokens = "
                    f"{max_new_tokens} exceeds the model's maximum of {self.max_positions} positions; shorten the "
                    "prompt or lower sampler.max_new_tokens"
                )

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


_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@rlsdk.hookimpl
def check_config(config: dict[str, Any]) -> None:
    """For ``policy.name=hf``: a rough memory estimate from the weight files, before anything is loaded.

    Parameters = bytes of ``*.safetensors`` / ``*.bin`` files / bytes per value of the dtype they are
    saved in (``config.json``'s ``torch_dtype`` or ``dtype``, else float32). Training holds them in
    ``policy.dtype`` four times (weights, gradients, AdamW's two moments), five with
    ``train.reference``; activations are left out, so it is a lower bound. A folder that is missing
    or unreadable is left to the policy's own, clearer, errors.
    """
    policy = config.get("policy") or {}
    if policy.get("name") != "hf" or not isinstance(policy.get("path"), str):
        return
    folder = Path(policy["path"]).expanduser()
    weights = [p for pattern in ("*.safetensors", "*.bin") for p in folder.glob(pattern) if p.is_file()]
    try:
        saved = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return
    stored = saved.get("torch_dtype") or saved.get("dtype") or "float32"
    dtype = policy.get("dtype", "float32")
    if not weights or stored not in _BYTES or dtype not in _BYTES:
        return
    params = sum(p.stat().st_size for p in weights) / _BYTES[stored]
    reference = (config.get("train") or {}).get("reference", True) is True
    copies = 4 + reference
    check_memory(
        params * _BYTES[dtype] * copies,
        f"policy 'hf' (policy.path {policy['path']!r}, about {params / 1e9:.2g}B parameters in {dtype}: weights, "
        f"gradients, Adam state{' and the reference' if reference else ''})",
        (config.get("train") or {}).get("device", "cpu"),
        hint="use a smaller model, policy.dtype=bfloat16, or train.reference=false",
    )
