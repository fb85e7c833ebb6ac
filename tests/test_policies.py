"""Policies ``tiny`` and ``hf``: shapes, padding invariance, decode steps, tokenizers, errors."""

from __future__ import annotations

import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rlsdk
import rlsdk.kinds
from rlsdk_plugins.tiny_policy import DEFAULT_ALPHABET, CharTokenizer, TinyPolicy


def left_pad(rows: list[list[int]], width: int, pad_ids: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists to ``width``; padded slots hold ``pad_ids`` (garbage on purpose) or 0."""
    seq = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, ids in enumerate(rows):
        n_pad = width - len(ids)
        if pad_ids is not None:
            seq[i, :n_pad] = torch.tensor(pad_ids[:n_pad], dtype=torch.long)
        seq[i, n_pad:] = torch.tensor(ids)
        mask[i, n_pad:] = 1
    return seq, mask


def small_tiny(**options) -> TinyPolicy:
    torch.manual_seed(0)
    opts = dict(d_model=32, n_layers=2, n_heads=4, max_len=32, init_std=0.2)
    opts.update(options)
    return rlsdk.create("policy", "tiny", **opts)


# ==================================================================================================
# tiny


def test_tiny_shapes_and_protocol():
    policy = small_tiny()
    assert rlsdk.kinds.conform("policy", policy, "tiny") is policy and isinstance(policy.tokenizer, rlsdk.Tokenizer)
    v = len(DEFAULT_ALPHABET) + 2
    assert policy.tokenizer.vocab_size == v
    seq, mask = left_pad([[3, 4, 5], [6, 7]], 4)
    assert policy.hidden_states(seq, mask).shape == (2, 4, 32)
    assert policy.output_weight().shape == (v, 32)
    out = policy.decode_step(seq, mask, None)
    assert isinstance(out, rlsdk.DecodeOutput) and out.logits.shape == (2, v)


def test_tiny_defaults_and_near_uniform_start():
    torch.manual_seed(0)
    policy = rlsdk.create("policy", "tiny")
    assert policy.output_weight().shape == (len(DEFAULT_ALPHABET) + 2, 64) and len(policy.blocks) == 2
    seq, mask = left_pad([policy.tokenizer.encode("12+34=")], 6)
    with torch.no_grad():
        probs = torch.softmax(policy.decode_step(seq, mask, None).logits, -1)
    v = probs.shape[-1]
    assert float((probs - 1 / v).abs().max()) < 0.1 / v  # initial policy is close to uniform


def test_tiny_left_padding_invariance():
    policy = small_tiny()
    tokens = [[5, 9, 2, 14, 3], [7, 7, 8]]
    alone = [policy.hidden_states(*left_pad([t], len(t)))[0] for t in tokens]
    garbage = [11, 23, 4, 17, 30, 9, 2, 5]  # padded slots hold real-looking ids; the mask must hide them
    seq, mask = left_pad(tokens, 9, pad_ids=garbage)
    padded = policy.hidden_states(seq, mask)
    assert torch.isfinite(padded).all()  # fully masked (pad) query rows produce no NaN
    for i, t in enumerate(tokens):
        torch.testing.assert_close(padded[i, -len(t) :], alone[i], rtol=1e-5, atol=1e-5)
    logits = policy.decode_step(seq, mask, None).logits
    for i, t in enumerate(tokens):
        alone_logits = policy.decode_step(*left_pad([t], len(t)), None).logits[0]
        torch.testing.assert_close(logits[i], alone_logits, rtol=1e-5, atol=1e-5)


def test_tiny_decode_step_equals_hidden_times_weight():
    policy = small_tiny()
    seq, mask = left_pad([[3, 4, 5, 6], [9, 10]], 5)
    expected = policy.hidden_states(seq, mask)[:, -1] @ policy.output_weight().T
    logits = policy.decode_step(seq, mask, None).logits
    torch.testing.assert_close(logits, expected)
    assert float(logits.detach().std()) > 1e-3  # not trivially zero


def test_tiny_is_causal():
    policy = small_tiny()
    a, mask = left_pad([[3, 4, 5, 6, 7]], 5)
    b = a.clone()
    b[0, 3:] = torch.tensor([20, 21])
    ha, hb = policy.hidden_states(a, mask), policy.hidden_states(b, mask)
    torch.testing.assert_close(ha[:, :3], hb[:, :3])
    assert not torch.allclose(ha[:, 3:], hb[:, 3:])


def test_tiny_determinism_under_manual_seed():
    first, second = small_tiny(), small_tiny()
    for (name, p), (_, q) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(p, q), name
    torch.manual_seed(1)
    other = TinyPolicy(d_model=32, n_layers=2, n_heads=4, max_len=32, init_std=0.2)
    assert not torch.equal(other.lm_head.weight, first.lm_head.weight)
    seq, mask = left_pad([[3, 4, 5]], 3)
    assert torch.equal(first.hidden_states(seq, mask), first.hidden_states(seq, mask))


def test_tiny_gradients_reach_every_parameter_and_inputs_untouched():
    policy = small_tiny()
    seq, mask = left_pad([[3, 4, 5, 6], [7, 8]], 4)
    seq_copy, mask_copy = seq.clone(), mask.clone()
    logits = policy.hidden_states(seq, mask) @ policy.output_weight().T
    (logits * mask[..., None]).square().sum().backward()
    for name, p in policy.named_parameters():
        if name == "pos_emb.weight":
            continue  # only rows of used positions get gradient
        assert p.grad is not None and torch.isfinite(p.grad).all() and float(p.grad.abs().sum()) > 0, name
    assert torch.equal(seq, seq_copy) and torch.equal(mask, mask_copy)


def test_tiny_max_len_exceeded():
    policy = small_tiny(max_len=4)
    seq, mask = left_pad([[3, 4, 5, 6, 7]], 7)
    with pytest.raises(ValueError, match=r"policy\.max_len=4"):
        policy.hidden_states(seq, mask)
    policy.hidden_states(*left_pad([[3, 4, 5, 6]], 7))  # 4 real tokens behind 3 pads fit


def test_char_tokenizer_round_trip_and_specials():
    tok = small_tiny().tokenizer
    text = "(12+3)*4=60? yes, ok."
    ids = tok.encode(text)
    assert len(ids) == len(text) and min(ids) >= 2
    assert tok.decode(ids) == text
    assert tok.decode([tok.eos_token_id] + ids + [tok.eos_token_id, tok.pad_token_id]) == text
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 1)
    assert CharTokenizer("ab").encode("ba") == [3, 2]


def test_char_tokenizer_unknown_char():
    tok = CharTokenizer("0123456789+")
    with pytest.raises(rlsdk.ConfigError) as info:
        tok.encode("1+X2")
    message = str(info.value)
    assert "'X'" in message and "'1+X2'" in message and "policy.alphabet" in message


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(d_model=30, n_heads=4), r"policy\.n_heads=4 must divide policy\.d_model=30"),
        (dict(alphabet="abca"), r"policy\.alphabet.*repeats.*'a'"),
        (dict(alphabet=""), r"policy\.alphabet"),
        (dict(n_layers=0), r"policy\.n_layers.*got 0"),
        (dict(max_len=2.5), r"policy\.max_len.*got 2\.5"),
        (dict(init_std=-1.0), r"policy\.init_std.*got -1\.0"),
    ],
)
def test_tiny_bad_options(options, match):
    with pytest.raises(rlsdk.ConfigError, match=match):
        rlsdk.create("policy", "tiny", **options)


@settings(max_examples=30, deadline=None)
@given(
    tokens=st.lists(st.integers(2, 20), min_size=1, max_size=8),
    extra_pad=st.integers(0, 6),
    pad_seed=st.integers(0, 1000),
)
def test_property_tiny_padding_invariance(tokens, extra_pad, pad_seed):
    policy = _PROPERTY_POLICY
    garbage = torch.randint(0, 20, (extra_pad,), generator=torch.Generator().manual_seed(pad_seed)).tolist()
    alone = policy.hidden_states(*left_pad([tokens], len(tokens)))
    padded = policy.hidden_states(*left_pad([tokens], len(tokens) + extra_pad, pad_ids=garbage))
    assert torch.isfinite(padded).all()
    torch.testing.assert_close(padded[:, extra_pad:], alone, rtol=1e-5, atol=1e-5)


_PROPERTY_POLICY = small_tiny(n_layers=1)


# ==================================================================================================
# hf

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

HF_CHARS = "0123456789 +-=abc"


def hf_tokenizer(with_pad: bool = True):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<pad>": 0, "<eos>": 1, **{ch: i + 2 for i, ch in enumerate(HF_CHARS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    special = {"eos_token": "<eos>", **({"pad_token": "<pad>"} if with_pad else {})}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, clean_up_tokenization_spaces=False, **special)


def tiny_hf_model(kind: str):
    torch.manual_seed(0)
    vocab = len(HF_CHARS) + 2
    if kind == "llama":
        config = transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, initializer_range=0.2,
            pad_token_id=0, eos_token_id=1, bos_token_id=None,
        )  # fmt: skip
        return transformers.LlamaForCausalLM(config)
    config = transformers.GPT2Config(
        vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0, eos_token_id=1, bos_token_id=1,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def hf_dir(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    tiny_hf_model(request.param).save_pretrained(folder)
    hf_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_policy(hf_dir):
    return rlsdk.create("policy", "hf", path=str(hf_dir))


def test_hf_state_dict_is_the_models(hf_policy):
    assert rlsdk.kinds.conform("policy", hf_policy, "hf") is hf_policy and isinstance(
        hf_policy.tokenizer, rlsdk.Tokenizer
    )
    own = hf_policy.model.state_dict()
    wrapped = hf_policy.state_dict()
    assert set(wrapped) == {f"model.{k}" for k in own}
    assert hf_policy.output_weight().shape == (len(HF_CHARS) + 2, 32)


def test_hf_hidden_times_weight_equals_model_logits(hf_policy):
    tok = hf_policy.tokenizer
    seq, mask = left_pad([tok.encode("12+3="), tok.encode("7-a")], 6)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ours = hf_policy.hidden_states(seq, mask) @ hf_policy.output_weight().T
        theirs = hf_policy.model(input_ids=seq, attention_mask=mask, position_ids=positions).logits
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], rtol=1e-5, atol=1e-5)
    assert float(theirs[real].std()) > 0.1  # a non-trivial model


def test_hf_left_padding_invariance(hf_policy):
    rows = [[3, 4, 5, 6, 7], [8, 9]]
    with torch.no_grad():
        alone = [hf_policy.hidden_states(*left_pad([r], len(r)))[0] for r in rows]
        padded = hf_policy.hidden_states(*left_pad(rows, 8, pad_ids=[12, 5, 9, 3, 14, 2]))
    for i, r in enumerate(rows):
        torch.testing.assert_close(padded[i, -len(r) :], alone[i], rtol=1e-5, atol=1e-5)


def test_hf_kv_cached_decode_equals_full_recompute(hf_policy):
    seq, mask = left_pad([[3, 4, 5, 6], [7, 8], [9, 10, 11]], 5, pad_ids=[13, 2, 6])
    g = torch.Generator().manual_seed(0)
    fed: list[int] = []  # columns of input_ids the base model receives per call
    hook = hf_policy.model.base_model.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    state = None
    try:
        with torch.no_grad():
            for step in range(5):
                fed.clear()
                out = hf_policy.decode_step(seq, mask, state)
                assert fed == [seq.shape[1] if step == 0 else 1]  # after the first step: only the new token
                full = hf_policy.hidden_states(seq, mask)[:, -1] @ hf_policy.output_weight().T
                live = mask[:, -1].bool()
                torch.testing.assert_close(out.logits[live], full[live].float(), rtol=1e-4, atol=1e-4)
                state = out.state
                nxt = torch.multinomial(torch.softmax(out.logits, -1), 1, generator=g)
                # Row 1 finishes after step 1: later columns are padding (mask 0), as the group sampler does.
                alive = torch.tensor([[1], [1 if step < 1 else 0], [1]])
                seq = torch.cat([seq, torch.where(alive.bool(), nxt, torch.zeros_like(nxt))], 1)
                mask = torch.cat([mask, alive], 1)
            # A state from a different batch starts over instead of reusing a wrong cache.
            fed.clear()
            restart = hf_policy.decode_step(seq[:2], mask[:2], state)
            assert fed == [seq.shape[1]]
            full = hf_policy.hidden_states(seq[:2], mask[:2])[:, -1] @ hf_policy.output_weight().T
            torch.testing.assert_close(restart.logits, full.float(), rtol=1e-4, atol=1e-4)
            # A stale state whose cache has since grown in place is not reused either.
            first = hf_policy.decode_step(seq[:, :-2], mask[:, :-2], None).state
            hf_policy.decode_step(seq[:, :-1], mask[:, :-1], first)
            fed.clear()
            stale = hf_policy.decode_step(seq, mask, first)
            assert len(fed) == 1 and fed[0] in (seq.shape[1], 2)  # restart, or a cache that was not grown
            full = hf_policy.hidden_states(seq, mask)[:, -1] @ hf_policy.output_weight().T
            live = mask[:, -1].bool()
            torch.testing.assert_close(stale.logits[live], full[live].float(), rtol=1e-4, atol=1e-4)
    finally:
        hook.remove()


def test_hf_tokenizer_round_trip(hf_policy):
    tok = hf_policy.tokenizer
    text = "12 + 3 = abc"
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert tok.decode(ids + [tok.eos_token_id, tok.pad_token_id]) == text
    assert (tok.pad_token_id, tok.eos_token_id, tok.vocab_size) == (0, 1, len(HF_CHARS) + 2)


def test_hf_pad_falls_back_to_eos(tmp_path):
    from rlsdk_plugins.hf_policy import HFTokenizer

    tok = HFTokenizer(hf_tokenizer(with_pad=False))
    assert tok.pad_token_id == tok.eos_token_id == 1


def test_hf_bfloat16(hf_dir):
    policy = rlsdk.create("policy", "hf", path=str(hf_dir), dtype="bfloat16")
    assert policy.output_weight().dtype == torch.bfloat16
    seq, mask = left_pad([[3, 4, 5]], 4)
    with torch.no_grad():
        assert policy.hidden_states(seq, mask).dtype == torch.bfloat16
        assert policy.decode_step(seq, mask, None).logits.dtype == torch.float32


def test_hf_missing_path(tmp_path):
    with pytest.raises(rlsdk.ConfigError, match=r"policy\.path .*nope.* is not a folder"):
        rlsdk.create("policy", "hf", path=str(tmp_path / "nope"))
    with pytest.raises(rlsdk.ConfigError, match=r"policy\.path is required"):
        rlsdk.create("policy", "hf")
    with pytest.raises(rlsdk.ConfigError, match=r"policy\.path .*could not load"):
        rlsdk.create("policy", "hf", path=str(tmp_path))  # an empty folder


def test_hf_bad_dtype(tmp_path):
    with pytest.raises(rlsdk.ConfigError, match=r"policy\.dtype must be one of float32, bfloat16, float16; got 'fp8'"):
        rlsdk.create("policy", "hf", path=str(tmp_path), dtype="fp8")


def test_hf_without_transformers(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(rlsdk.ConfigError, match=r"pip install 'rlsdk\[hf\]'"):
        rlsdk.create("policy", "hf", path=str(tmp_path))


def test_hf_output_bias_refused(tmp_path):
    torch.manual_seed(0)
    config = transformers.PhiConfig(
        vocab_size=len(HF_CHARS) + 2, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=32, pad_token_id=0, eos_token_id=1, bos_token_id=1,
    )  # fmt: skip
    model = transformers.PhiForCausalLM(config)
    assert model.lm_head.bias is not None
    model.save_pretrained(tmp_path)
    hf_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(rlsdk.ConfigError, match="output layer has a bias"):
        rlsdk.create("policy", "hf", path=str(tmp_path))


def test_hf_logit_softcapping_refused(hf_dir, tmp_path):
    import json
    import shutil

    shutil.copytree(hf_dir, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["final_logit_softcapping"] = 30.0
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(rlsdk.ConfigError, match=r"final_logit_softcapping=30\.0"):
        rlsdk.create("policy", "hf", path=str(tmp_path))


def model_only(hf_dir, folder):
    """Copy the model files of ``hf_dir`` to ``folder``, leaving its tokenizer files behind."""
    import shutil

    shutil.copytree(hf_dir, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("tokenizer*", "special_*"))
    assert not list(folder.glob("tokenizer*"))
    return folder


def raises_one_line(folder, match: str) -> str:
    """The ConfigError message of loading ``folder``: one line naming policy.path and its value."""
    with pytest.raises(rlsdk.ConfigError, match=match) as info:
        rlsdk.create("policy", "hf", path=str(folder))
    message = str(info.value)
    assert message.startswith(f"policy.path {str(folder)!r}: ") and "\n" not in message
    return message


def test_hf_missing_tokenizer_files(hf_dir, tmp_path):
    # transformers raises for llama (no backend tokenizer) but builds an empty GPT2Tokenizer for gpt2,
    # whose prompts tokenise to nothing: both give the same clear error.
    message = raises_one_line(model_only(hf_dir, tmp_path), "the folder has no tokenizer files")
    assert "tokenizer.save_pretrained(path)" in message


def test_hf_empty_tokenizer_refused(hf_dir, tmp_path):
    from tokenizers import Tokenizer, models

    empty = transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({}, unk_token=None)))
    empty.save_pretrained(model_only(hf_dir, tmp_path))
    raises_one_line(tmp_path, r"the tokenizer has no ordinary tokens \(len\(tokenizer\) = 0")


def test_hf_tokenizer_without_eos_refused(hf_dir, tmp_path):
    tok = hf_tokenizer()
    tok.eos_token = None
    tok.save_pretrained(model_only(hf_dir, tmp_path))
    raises_one_line(tmp_path, "the tokenizer has no eos token; set eos_token in its tokenizer_config.json")


def test_hf_tokenizer_that_loses_text_refused(hf_dir, tmp_path):
    from tokenizers import Regex, normalizers

    tok = hf_tokenizer()
    tok.backend_tokenizer.normalizer = normalizers.Replace(Regex("."), "")  # every text normalises to ""
    tok.save_pretrained(model_only(hf_dir, tmp_path))
    raises_one_line(tmp_path, r"the tokenizer loses text: 'Hello, world 123' encodes to no tokens")


def test_hf_malformed_tokenizer_refused(hf_dir, tmp_path):
    model_only(hf_dir, tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nope"}}')
    raises_one_line(tmp_path, r"could not load the tokenizer \(\w+: .*\); save it again with tokenizer\.save_")


def test_hf_tokenizer_larger_than_model_refused(hf_dir, tmp_path):
    tok = hf_tokenizer()
    tok.add_tokens(["xyz", "uvw"])
    tok.save_pretrained(model_only(hf_dir, tmp_path))
    rows = len(HF_CHARS) + 2
    message = raises_one_line(tmp_path, rf"token ids up to {rows + 1} but the model's output layer has only {rows} ")
    assert "resize_token_embeddings" in message


def test_hf_config_vocab_size_checked(hf_dir, tmp_path, monkeypatch):
    import json
    import shutil

    shutil.copytree(hf_dir, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "vocab_size": 40}))
    raises_one_line(tmp_path, "could not load a causal LM: ")  # transformers raises a RuntimeError
    # A model whose config disagrees with its loaded output layer (custom code can do that).
    model = tiny_hf_model("llama")
    model.config.vocab_size = 40
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *args, **kwargs: model)
    raises_one_line(hf_dir, r"config says vocab_size=40 but its output layer has 19 rows; set vocab_size to 19")


def test_hf_check_prompts(hf_policy):
    import re

    where = re.escape(f"policy 'hf' (policy.path {hf_policy.path!r}): ")
    hf_policy.check_prompts(["12+3=", "7-a", "12+3="], 8)
    hf_policy.check_prompts(["1" * 64], None)  # exactly max_position_embeddings = 64
    assert hf_policy.max_positions == 64
    with pytest.raises(rlsdk.ConfigError, match=where + "the prompt '' tokenises to no tokens; "):
        hf_policy.check_prompts(["1+1=", ""], 8)
    with pytest.raises(rlsdk.ConfigError, match=where + "the prompt 'Hello' cannot be tokenised"):
        hf_policy.check_prompts(["Hello"], 8)
    too_long = r"the prompt '1{57}\.\.\.' has 61 tokens, which with sampler\.max_new_tokens = 8 exceeds the model's"
    with pytest.raises(rlsdk.ConfigError, match=where + too_long + " maximum of 64 positions") as info:
        hf_policy.check_prompts(["1+1=", "1" * 61], 8)
    assert "lower sampler.max_new_tokens" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(rlsdk.ConfigError, match="has 65 tokens"):
        hf_policy.check_prompts(["1" * 65], None)


def test_hf_memory_estimate_at_load_from_the_weight_files(hf_dir, monkeypatch):
    """load_config estimates the hf policy's training memory from its weight files, loading nothing."""
    import rlsdk.validation
    from rlsdk.config import load_config

    registry = rlsdk.get_registry()
    overrides = ["policy.name=hf", f"policy.path={hf_dir}"]
    weights = sum(p.stat().st_size for p in hf_dir.glob("*.safetensors"))
    load_config(registry, overrides=overrides)  # fits this machine
    monkeypatch.setattr(rlsdk.validation, "_device_memory", lambda device: (5 * weights - 1, "this machine"))
    with pytest.raises(
        rlsdk.ConfigError,
        match=r"policy 'hf' \(policy.path .*parameters in float32: weights, gradients, Adam state and the reference\) "
        r"needs about .*; this machine has",
    ):
        load_config(registry, overrides=overrides)
    load_config(registry, overrides=[*overrides, "train.reference=false"])  # four copies fit
