"""rlsdk.testing: each check passes on a correct component and fails, naming the property, on broken ones."""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
import textwrap
import types

import pytest
import torch

import rlsdk
from rlsdk import Generation, HiddenLossOutput, LossOutput, SamplingParams
from rlsdk.testing import (
    check_advantage,
    check_engine,
    check_logprob_backend,
    check_loss,
    check_reward,
    check_sampler,
    check_task,
    make_engine,
    make_examples,
    make_policy,
    make_registry,
    make_rollout_batch,
    make_train_batch,
)

pytest_plugins = ["pytester"]

REGISTRY = make_registry()


# --------------------------------------------------------------------------------------------------
# Batches and the registry


def test_train_batch_is_seeded_ragged_and_its_own_global_batch():
    a, b = make_train_batch(seed=3), make_train_batch(seed=3)
    assert torch.equal(a.old_logprobs, b.old_logprobs) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.old_logprobs, make_train_batch(seed=4).old_logprobs)
    lengths = a.mask.sum(-1)
    assert lengths[0] == 6 and lengths[1] == 0 and a.mask[2].tolist() == [1, 0, 1, 1, 1, 1]
    assert a.num_tokens == float(a.mask.sum()) and a.num_rows == 8.0 and a.num_seqs == 7.0
    assert bool((a.advantages[a.mask == 0] == 0).all()) and bool((a.old_logprobs < 0).all())
    assert a.ref_logprobs is not None and a.entropy is None
    with_entropy = make_train_batch(entropy=True, ref_logprobs=False)
    assert with_entropy.entropy.requires_grad and with_entropy.ref_logprobs is None


def test_rollout_batch_is_consistent():
    batch = make_rollout_batch(seed=1, groups=3, group_size=2, length=5)
    b, t = batch.mask.shape
    assert (b, t) == (6, 5) and batch.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert batch.sequences.shape == batch.attention_mask.shape == (6, 3 + 5)
    assert torch.equal(batch.attention_mask[:, 3:].float(), batch.mask)
    assert [len(c) for c in batch.completions] == batch.mask.sum(-1).int().tolist()
    assert [m["completion_tokens"] for m in batch.metadata] == [len(c) for c in batch.completions]
    assert batch.prompts[0] == batch.prompts[1] != batch.prompts[2]
    assert batch.metadata[0]["answer"] == batch.prompts[0][4:7][::-1]


def test_policy_and_examples_are_tiny_and_seeded():
    policy, again = make_policy(seed=2), make_policy(seed=2)
    assert not policy.training and policy.output_weight().shape[1] == 16
    assert all(torch.equal(p, q) for p, q in zip(policy.parameters(), again.parameters()))
    examples = make_examples(seed=5, n=4)
    assert len({e.prompt for e in examples}) == 4 and examples == make_examples(seed=5, n=4)
    assert all(e.prompt == f"rev {e.answer[::-1]}=" for e in examples)


PLUGIN_SOURCE = """
import rlsdk

class Half:
    def __call__(self, prompts, completions, metadata):
        return [0.5 for _ in completions]

@rlsdk.hookimpl
def register_rewards(register):
    register("half", Half)
"""


def _write_distribution(root, dist, module, source):
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[rlsdk]\n{module} = {module}\n")


def test_make_registry_holds_builtins_and_given_plugins_only(tmp_path, monkeypatch):
    # An installed third-party plugin: the global registry sees it, make_registry does not.
    _write_distribution(tmp_path, "rlsdk-other", "rlsdk_other_plugin", PLUGIN_SOURCE.replace('"half"', '"other"'))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("RLSDK_LOAD_PLUGINS", raising=False)
    assert "other" in rlsdk.plugins.Registry(*rlsdk.plugins.get_plugin_manager()).names("reward")

    mine = types.ModuleType("my_test_plugin")
    exec(PLUGIN_SOURCE, mine.__dict__)
    registry = make_registry(mine)
    rewards = registry.names("reward")
    assert "half" in rewards and "exact_match" in rewards and "other" not in rewards
    assert registry.owner("reward", "half") == "my_test_plugin"
    assert "RLSDK_LOAD_PLUGINS" not in os.environ  # restored

    alone = make_registry(mine, builtins=False)
    assert alone.names("reward") == ["half"] and alone.names("loss") == []

    path = tmp_path / "file_plugin.py"
    path.write_text(PLUGIN_SOURCE.replace('"half"', '"from_file"'))
    monkeypatch.setenv("RLSDK_LOAD_PLUGINS", "rlsdk-other")
    assert "from_file" in make_registry(str(path)).names("reward")
    assert os.environ["RLSDK_LOAD_PLUGINS"] == "rlsdk-other"  # restored


def test_importing_the_module_has_no_side_effects():
    code = (
        "import os, sys, rlsdk.plugins as p, rlsdk.testing\n"
        "assert p._DEFAULT is None, 'a registry was built'\n"
        "assert not [m for m in sys.modules if m.startswith('rlsdk_plugins')], 'plugins were imported'\n"
        "assert 'RLSDK_LOAD_PLUGINS' not in os.environ\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RLSDK_LOAD_PLUGINS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------------
# Losses


class GoodLoss:
    """REINFORCE with global-count normalisation and one additive metric."""

    def __call__(self, logprobs, batch):
        per_token = -batch.advantages * logprobs
        metric = float(rlsdk.aggregate(per_token.detach(), batch))
        return LossOutput(rlsdk.aggregate(per_token, batch, "token-mean"), {"pg": metric})


class InPlaceLoss(GoodLoss):
    def __call__(self, logprobs, batch):
        batch.advantages.mul_(1.0)  # same values, but an in-place write
        return super().__call__(logprobs, batch)


class ReassigningLoss(GoodLoss):
    def __call__(self, logprobs, batch):
        batch.advantages = batch.advantages.clone()
        return super().__call__(logprobs, batch)


class LocalCountLoss:
    def __call__(self, logprobs, batch):
        return LossOutput((-batch.advantages * logprobs * batch.mask).sum() / batch.mask.sum().clamp_min(1.0))


class NanGradLoss:
    """The `where` trap: the unselected branch divides by the mask, so the gradient there is 0 * inf = NaN."""

    def __call__(self, logprobs, batch):
        per_token = torch.where(batch.mask > 0, -batch.advantages * logprobs / batch.mask, 0.0)
        return LossOutput(per_token.sum() / batch.num_tokens)


class UnmaskedRatioLoss:
    """Trusts the advantages to be 0 at masked positions instead of applying the mask."""

    def __call__(self, logprobs, batch):
        ratio = torch.exp(logprobs - batch.old_logprobs)
        return LossOutput((-batch.advantages * ratio).sum() / batch.num_tokens)


class UnmaskedPenaltyLoss(GoodLoss):
    """A penalty on the ratio of every position, padding included."""

    def __call__(self, logprobs, batch):
        out = super().__call__(logprobs, batch)
        return LossOutput(out.loss + 0.01 * torch.exp(logprobs - batch.old_logprobs).sum() / batch.num_rows)


class TupleLoss:
    def __call__(self, logprobs, batch):
        return rlsdk.aggregate(-batch.advantages * logprobs, batch), {}


class CountingLoss(GoodLoss):
    def __init__(self):
        self.calls = 0

    def __call__(self, logprobs, batch):
        self.calls += 1
        out = super().__call__(logprobs, batch)
        return LossOutput(out.loss * (1.0 + 1e-3 * self.calls), out.metrics)


class TensorMetricLoss(GoodLoss):  # a tensor metric must be detached
    def __call__(self, logprobs, batch):
        out = super().__call__(logprobs, batch)
        return LossOutput(out.loss, {"pg": out.loss})


class VectorMetricLoss(GoodLoss):
    def __call__(self, logprobs, batch):
        out = super().__call__(logprobs, batch)
        return LossOutput(out.loss, {"pg": logprobs.detach().sum(-1)})


class StringMetricLoss(GoodLoss):
    def __call__(self, logprobs, batch):
        return LossOutput(super().__call__(logprobs, batch).loss, {"pg": "low"})


class DeviceMetricLoss(GoodLoss):
    """GoodLoss with its metric left a detached 0-dim tensor (what a loss on a GPU should return)."""

    def __call__(self, logprobs, batch):
        out = super().__call__(logprobs, batch)
        return LossOutput(out.loss, {"pg": rlsdk.aggregate((-batch.advantages * logprobs).detach(), batch)})


class ConstantMetricLoss(GoodLoss):
    def __call__(self, logprobs, batch):
        return LossOutput(super().__call__(logprobs, batch).loss, {"half": 0.5})


class DetachedLoss:
    def __call__(self, logprobs, batch):
        return LossOutput(rlsdk.aggregate(-batch.advantages * logprobs.detach(), batch))


class EntropyBonusLoss(GoodLoss):
    needs_entropy = True
    needs_ref_logprobs = True

    def __call__(self, logprobs, batch):
        assert batch.entropy is not None and batch.entropy.requires_grad and batch.ref_logprobs is not None
        out = super().__call__(logprobs, batch)
        return LossOutput(out.loss - 0.01 * rlsdk.aggregate(batch.entropy, batch), out.metrics)


def test_check_loss_passes_on_correct_losses():
    check_loss(GoodLoss(), additive_metrics=True)
    check_loss(DeviceMetricLoss(), additive_metrics=True)
    check_loss(EntropyBonusLoss())
    check_loss(GoodLoss(), make_train_batch(seed=9, rows=5, length=3), seed=9)
    check_loss(ConstantMetricLoss())  # metrics need not be additive unless asked


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        (InPlaceLoss(), r"loss InPlaceLoss: input modified in place: tensor advantages"),
        (ReassigningLoss(), r"input modified: advantages was replaced"),
        (LocalCountLoss(), r"micro-batch invariance: the loss is .* sums to .* over 2 micro-batches"),
        (NanGradLoss(), r"finite gradient: .*logprobs is nan at row 1"),
        (UnmaskedRatioLoss(), r"masked positions: changing the values at masked positions"),
        (UnmaskedPenaltyLoss(), r"masked positions: the gradient w.r.t. logprobs is .* at masked row 1, position 0"),
        (TupleLoss(), r"return type: returned tuple"),
        (CountingLoss(), r"deterministic: two calls"),
        (TensorMetricLoss(), r"metrics: metric 'pg' is a tensor of shape \(\), .* requires_grad True"),
        (VectorMetricLoss(), r"metrics: metric 'pg' is a tensor of shape \(\d+,\)"),
        (StringMetricLoss(), r"metrics: metric 'pg' is a str"),
        (DetachedLoss(), r"gradient: LossOutput.loss does not depend on logprobs"),
    ],
    ids=lambda v: None if isinstance(v, str) else type(v).__name__,
)
def test_check_loss_fails_on_broken_losses(loss, message):
    with pytest.raises(AssertionError, match=message):
        check_loss(loss)


def test_check_loss_can_require_additive_metrics():
    with pytest.raises(AssertionError, match=r"micro-batch invariance: metric 'half' is 0.5 .* sums to 1 over 2"):
        check_loss(ConstantMetricLoss(), additive_metrics=True)


class MisspeltCapabilityLoss(GoodLoss):
    needs_entropyy = True


class StringCapabilityLoss(GoodLoss):
    needs_entropy = "yes"


def test_check_loss_conforms_the_loss_to_its_kind_first():
    with pytest.raises(AssertionError, match=r"loss MisspeltCapabilityLoss declares 'needs_entropyy', which rlsdk"):
        check_loss(MisspeltCapabilityLoss())
    with pytest.raises(AssertionError, match=r"loss StringCapabilityLoss: needs_entropy must be True or False"):
        check_loss(StringCapabilityLoss())


def test_check_loss_rejects_a_batch_without_what_the_loss_needs():
    with pytest.raises(ValueError, match="needs_entropy"):
        check_loss(EntropyBonusLoss(), make_train_batch(entropy=False))


# --------------------------------------------------------------------------------------------------
# Advantage estimators


class GoodAdvantage:
    def __call__(self, batch):
        mean, _, _ = rlsdk.group_stats(batch.rewards, batch.group_ids)
        return (batch.rewards - mean)[:, None] * batch.mask


class UnmaskedAdvantage:
    def __call__(self, batch):
        return batch.rewards[:, None].expand(batch.mask.shape).clone()


class PerSequenceAdvantage:
    def __call__(self, batch):
        return batch.rewards.clone()


class InPlaceAdvantage:
    def __call__(self, batch):
        batch.rewards.sub_(batch.rewards.mean())
        return batch.rewards[:, None] * batch.mask


class PaddingKLAdvantage:
    """Sums old - ref over every position, padding included."""

    def __call__(self, batch):
        kl = (batch.old_logprobs - batch.ref_logprobs).sum(-1)
        return (batch.rewards - 0.1 * kl)[:, None] * batch.mask


class InfAdvantage:
    def __call__(self, batch):
        return torch.where(batch.mask > 0, torch.tensor(float("inf")), 0.0)


class IntegerAdvantage:
    def __call__(self, batch):
        return (batch.rewards > 0.5).long()[:, None] * batch.mask.long()


class CountingAdvantage(GoodAdvantage):
    calls = 0

    def __call__(self, batch):
        self.calls += 1
        return super().__call__(batch) * self.calls


def test_check_advantage_passes_on_a_correct_estimator():
    check_advantage(GoodAdvantage())
    check_advantage(GoodAdvantage(), make_rollout_batch(seed=3, groups=1, group_size=3, length=2), seed=3)


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (UnmaskedAdvantage(), r"advantage UnmaskedAdvantage: masked positions: value .* at masked row 1, position 0"),
        (PerSequenceAdvantage(), r"shape: returned shape \(8,\); expected mask's \(8, 6\)"),
        (InPlaceAdvantage(), r"input modified in place: tensor rewards"),
        (PaddingKLAdvantage(), r"masked positions: changing old_logprobs and ref_logprobs at masked positions"),
        (InfAdvantage(), r"finite: value inf at row 0, position 0"),
        (IntegerAdvantage(), r"dtype: returned dtype torch.int64"),
        (CountingAdvantage(), r"deterministic"),
    ],
    ids=lambda v: None if isinstance(v, str) else type(v).__name__,
)
def test_check_advantage_fails_on_broken_estimators(estimator, message):
    with pytest.raises(AssertionError, match=message):
        check_advantage(estimator)


# --------------------------------------------------------------------------------------------------
# Rewards


def good_reward(prompts, completions, metadata):
    return [1.0 if c.strip() == m["answer"] else 0.0 for c, m in zip(completions, metadata)]


def random_reward(prompts, completions, metadata):
    return [random.random() for _ in completions]


def short_reward(prompts, completions, metadata):
    return good_reward(prompts, completions, metadata)[:-1]


def mutating_reward(prompts, completions, metadata):
    for m in metadata:
        m["seen"] = True
    return good_reward(prompts, completions, metadata)


def nan_reward(prompts, completions, metadata):
    return [float("nan") if not c else 1.0 for c in completions]


def tensor_reward(prompts, completions, metadata):
    return torch.ones(len(completions))


def bool_reward(prompts, completions, metadata):
    return [c == m["answer"] for c, m in zip(completions, metadata)]


def test_check_reward_passes_on_a_correct_reward():
    check_reward(good_reward)
    check_reward(good_reward, ["p"], ["7"], [{"answer": "7"}])


@pytest.mark.parametrize(
    ("reward", "message"),
    [
        (random_reward, r"reward random_reward: deterministic: two calls"),
        (short_reward, r"reward short_reward: length: returned 3 values for 4 completions"),
        (mutating_reward, r"input modified: metadata was mutated"),
        (nan_reward, r"finite: value 3 is nan \(for completion ''\)"),
        (tensor_reward, r"return type: returned Tensor"),
        (bool_reward, r"return type: value 0 is True \(bool\)"),
    ],
    ids=lambda v: None if isinstance(v, str) else v.__name__,
)
def test_check_reward_fails_on_broken_rewards(reward, message):
    with pytest.raises(AssertionError, match=message):
        check_reward(reward)


def test_check_reward_rejects_inputs_of_different_lengths():
    with pytest.raises(ValueError, match="same length"):
        check_reward(good_reward, ["a", "b"], ["x"], [{}])


# --------------------------------------------------------------------------------------------------
# Samplers


def group_sampler():
    return REGISTRY.create("sampler", "group", {"n": 2, "max_new_tokens": 3})


class WrappedSampler:
    """The group sampler with one thing changed by ``edit(batch) -> batch`` after scoring."""

    def __init__(self, edit, score_it=True):
        self.inner, self.edit, self.score_it = group_sampler(), edit, score_it
        self.params = self.inner.params

    def __call__(self, engine, examples, score, generator, params):
        batch = self.inner(engine, examples, score if self.score_it else (lambda b: b), generator, params)
        return self.edit(batch)


def edited(**changes):
    """The group sampler whose result has fields replaced: ``field=lambda batch: new_value``."""
    return WrappedSampler(lambda b: b.replace(**{name: make(b) for name, make in changes.items()}))


class GlobalRngSampler(WrappedSampler):
    """Ignores the generator it is given."""

    def __call__(self, engine, examples, score, generator, params):
        generator = torch.Generator().manual_seed(int(torch.randint(0, 1000, ())))
        return super().__call__(engine, examples, score, generator, params)


class OwnParamsSampler(WrappedSampler):
    """Samples with its own params whatever params it is given."""

    def __call__(self, engine, examples, score, generator, params):
        return super().__call__(engine, examples, score, generator, self.params)


class OwnGroupSizeSampler(WrappedSampler):
    """Samples its own n whatever params it is given (evaluation would get groups of n)."""

    def __call__(self, engine, examples, score, generator, params):
        return super().__call__(engine, examples, score, generator, params.replace(n=self.params.n))


class EvalAtOneTemperatureSampler(WrappedSampler):
    def eval_params(self, temperature):
        return self.params.replace(n=1, temperature=1.0)


class LongerSampler(WrappedSampler):
    """Asks the engine for more tokens than its params allow."""

    def __call__(self, engine, examples, score, generator, params):
        return super().__call__(engine, examples, score, generator, params.replace(max_new_tokens=8))


class NoParamsSampler:
    def __init__(self):
        self.inner = group_sampler()

    def __call__(self, engine, examples, score, generator, params):
        return self.inner(engine, examples, score, generator, params)


class DictParamsSampler(NoParamsSampler):
    params = {"n": 2}


def test_check_sampler_passes_on_the_group_sampler(rlsdk_policy, rlsdk_examples):
    check_sampler(group_sampler())
    greedy = REGISTRY.create("sampler", "group", {"n": 3, "max_new_tokens": 2, "temperature": 0.0})
    check_sampler(greedy, make_engine(4), rlsdk_examples[:2], seed=4)
    check_sampler(greedy, policy=rlsdk_policy)
    check_sampler(greedy, rlsdk_policy, rlsdk_examples)  # a policy where the engine goes: the call before engines


def test_check_sampler_wants_an_engine_or_a_policy():
    with pytest.raises(ValueError, match="give an engine or a policy, not both"):
        check_sampler(group_sampler(), make_engine(), policy=make_policy())


@pytest.mark.parametrize(
    ("sampler", "message"),
    [
        (edited(group_ids=lambda b: torch.zeros_like(b.group_ids)), r"sampler WrappedSampler: group_ids: group 0"),
        (edited(group_ids=lambda b: torch.arange(len(b.group_ids))), r"group_ids: 6 distinct group_ids for 3 examples"),
        (WrappedSampler(lambda b: b, score_it=False), r"scored: the score function was never called"),
        (edited(rewards=lambda b: b.rewards + 1), r"scored: rewards are not those of the score function"),
        (edited(completions=lambda b: b.completions[:-1]), r"length: completions has 5 entries for B = 6"),
        (edited(mask=lambda b: b.mask * 0.5), r"mask: mask holds values other than 0 and 1"),
        (edited(attention_mask=lambda b: b.attention_mask[:, 1:]), r"sequences: sequences \(6, \d+\) and attention"),
        (edited(prompts=lambda b: ["rev 000="] * len(b.prompts)), r"prompts: row 0 has prompt 'rev 000='"),
        (edited(weight_versions=lambda b: b.weight_versions[:2]), r"weight_versions: weight_versions has shape \(2,\)"),
        (GlobalRngSampler(lambda b: b), r"deterministic: the same generator seed gave different rollouts"),
        (OwnGroupSizeSampler(lambda b: b), r"params.n: group 0 has 2 completions; the params given ask for n = 1"),
        (OwnParamsSampler(lambda b: b), r"length: completions have T = 3 tokens, more than max_new_tokens = 1"),
        (LongerSampler(lambda b: b), r"length: completions have T = \d+ tokens, more than max_new_tokens = 3"),
        (EvalAtOneTemperatureSampler(lambda b: b), r"eval_params: eval_params\(0.0\) returned .*temperature=0.0"),
        (NoParamsSampler(), r"sampler NoParamsSampler has no 'params', which the Sampler protocol requires"),
        (DictParamsSampler(), r"sampler DictParamsSampler: params must be an rlsdk.SamplingParams"),
    ],
    ids=[
        "mixed-groups",
        "group-per-row",
        "unscored",
        "rescored",
        "short-completions",
        "soft-mask",
        "short-attention",
        "foreign-prompt",
        "short-versions",
        "global-rng",
        "own-group-size",
        "own-params",
        "longer",
        "eval-temperature",
        "no-params",
        "dict-params",
    ],
)
def test_check_sampler_fails_on_broken_samplers(sampler, message):
    with pytest.raises(AssertionError, match=message):
        check_sampler(sampler)


# --------------------------------------------------------------------------------------------------
# Generation engines


class EditedEngine:
    """The inprocess engine with its Generation changed by ``edit(generation, params) -> generation``."""

    def __init__(self, edit=lambda out, params: out):
        self.inner, self.edit = REGISTRY.create("engine", "inprocess"), edit

    @property
    def tokenizer(self):
        return self.inner.tokenizer

    def update_weights(self, policy, version):
        self.inner.update_weights(policy, version)

    def generate(self, prompts, params, generator):
        return self.edit(self.inner.generate(prompts, params, generator), params)


def _rows(out, **changes):
    """A copy of Generation ``out`` with fields replaced: ``field=lambda out: new_value``."""
    values = {name: getattr(out, name) for name in ("token_ids", "logprobs", "finish_reasons", "weight_versions")}
    return Generation(**{**values, **{name: make(out) for name, make in changes.items()}})


class GlobalRngEngine(EditedEngine):
    def generate(self, prompts, params, generator):
        return super().generate(prompts, params, torch.Generator().manual_seed(int(torch.randint(0, 1000, ()))))


class FewerEngine(EditedEngine):
    """Ignores n: one completion per prompt."""

    def generate(self, prompts, params, generator):
        return super().generate(prompts, params.replace(n=1), generator)


class InterleavedEngine(EditedEngine):
    """Rows ordered prompt 0, 1, 2, 0, 1, 2 instead of 0, 0, 1, 1, 2, 2."""

    def generate(self, prompts, params, generator):
        out = super().generate(prompts, params, generator)
        b, n = len(out.token_ids), params.n
        order = [(j % (b // n)) * n + j // (b // n) for j in range(b)]
        return _rows(
            out,
            **{
                f: (lambda o, f=f: [getattr(o, f)[i] for i in order])
                for f in ("token_ids", "logprobs", "finish_reasons", "weight_versions")
            },
        )


class StaleVersionEngine(EditedEngine):
    def update_weights(self, policy, version):
        if self.inner.policy is None:
            self.inner.update_weights(policy, version)


class MutatingEngine(EditedEngine):
    def generate(self, prompts, params, generator):
        prompts[0].append(0)
        return super().generate(prompts[:], params, generator)


class NoGenerateEngine:
    tokenizer = None

    def update_weights(self, policy, version):
        pass


def test_check_engine_passes_on_the_inprocess_engine(rlsdk_engine):
    check_engine(rlsdk_engine)
    check_engine(make_engine(), make_policy(3), seed=3, params=SamplingParams(n=3, temperature=0.0, max_new_tokens=2))
    check_engine(EditedEngine())


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        (
            EditedEngine(lambda o, p: _rows(o, logprobs=lambda o: [o.logprobs[0][:-1], *o.logprobs[1:]])),
            r"engine EditedEngine: shapes: completion 0 has \d+ token ids and \d+ logprobs",
        ),
        (FewerEngine(), r"completions: generate\(3 prompts, n=2, max_new_tokens=4\) returned .* \[3, 3, 3, 3\]"),
        (
            EditedEngine(lambda o, p: _rows(o, finish_reasons=lambda o: ["eos"] * len(o.finish_reasons))),
            r"finish_reasons: completion 0 has finish reason 'eos'; expected one of \('stop', 'length'\)",
        ),
        (
            EditedEngine(lambda o, p: _rows(o, finish_reasons=lambda o: ["stop"] * len(o.finish_reasons))),
            r"finish_reasons: completion \d+ of 4 tokens does not end with EOS but has finish reason 'stop'",
        ),
        (
            EditedEngine(lambda o, p: _rows(o, token_ids=lambda o: [[*ids[:-1], 99] for ids in o.token_ids])),
            r"token_ids: completion 0: token id outside the vocabulary",
        ),
        (
            EditedEngine(lambda o, p: _rows(o, logprobs=lambda o: [[-lp + 1.0 for lp in row] for row in o.logprobs])),
            r"logprobs: completion 0: log-probability .* is not a finite float <= 0",
        ),
        (
            EditedEngine(
                lambda o, p: _rows(
                    o,
                    token_ids=lambda o: [ids * 2 for ids in o.token_ids],
                    logprobs=lambda o: [lps * 2 for lps in o.logprobs],
                )
            ),
            r"max_new_tokens: completion 0 has 8 tokens; expected 1 to max_new_tokens = 4",
        ),
        (GlobalRngEngine(), r"deterministic: the same generator seed gave different completions"),
        (InterleavedEngine(), r"layout: greedy completion 1 \(n = 2\) differs from greedy completion 0"),
        (StaleVersionEngine(), r"weight_versions: completion 0 reports weight version 3 after update_weights"),
        (MutatingEngine(), r"input modified: prompts was mutated"),
        (NoGenerateEngine(), r"engine NoGenerateEngine has no 'generate', which the GenerationEngine protocol"),
    ],
    ids=[
        "short-logprobs",
        "ignores-n",
        "bad-finish-reason",
        "stop-without-eos",
        "out-of-vocabulary",
        "positive-logprobs",
        "too-long",
        "global-rng",
        "interleaved",
        "stale-version",
        "mutates-prompts",
        "no-generate",
    ],
)
def test_check_engine_fails_on_broken_engines(engine, message):
    with pytest.raises(AssertionError, match=message):
        check_engine(engine)


# --------------------------------------------------------------------------------------------------
# Tasks and logprob backends


class GlobalRngTask:
    def sample(self, n, generator):
        return [rlsdk.Example(f"rev {int(torch.randint(100, 999, ()))}=", "1") for _ in range(n)]

    def eval_examples(self):
        return []


def test_check_task():
    check_task(REGISTRY.create("task", "reverse", {"eval_size": 5}))
    with pytest.raises(AssertionError, match=r"task GlobalRngTask: deterministic"):
        check_task(GlobalRngTask())


class NoTemperatureBackend:
    def __call__(self, hidden, weight, targets, *, temperature=1.0, with_entropy=False):
        return REGISTRY.create("logprob_backend", "torch")(hidden, weight, targets, with_entropy=with_entropy)


class AlwaysEntropyBackend:
    def __call__(self, hidden, weight, targets, *, temperature=1.0, with_entropy=False):
        torch_backend = REGISTRY.create("logprob_backend", "torch")
        return torch_backend(hidden, weight, targets, temperature=temperature, with_entropy=True)


class FusedBackend:
    """The torch backend plus a "fused" loss_from_hidden: the torch backend then the loss, times ``scale``."""

    scale = 1.0

    def __init__(self):
        self.inner = REGISTRY.create("logprob_backend", "torch")

    def __call__(self, hidden, weight, targets, *, temperature=1.0, with_entropy=False):
        return self.inner(hidden, weight, targets, temperature=temperature, with_entropy=with_entropy)

    def loss_from_hidden(self, hidden, weight, targets, batch, loss, *, temperature):
        out = self.inner(hidden, weight, targets, temperature=temperature, with_entropy=True)
        lp, ent = out.logprobs.view(batch.mask.shape), out.entropy.view(batch.mask.shape)
        needs_entropy = rlsdk.kinds.member("loss", loss, "needs_entropy")
        micro = dataclasses.replace(batch, entropy=ent if needs_entropy else None)
        result = loss(lp, micro)
        return HiddenLossOutput(LossOutput(result.loss * self.scale, result.metrics), lp.detach(), ent.detach())


class WrongFusedBackend(FusedBackend):
    scale = 1.01  # a fused path that disagrees with the backend followed by the loss


class LocalCountFusedBackend(FusedBackend):
    """Normalises each micro-batch by its own counts."""

    def loss_from_hidden(self, hidden, weight, targets, batch, loss, *, temperature):
        local = dataclasses.replace(batch, num_tokens=None, num_seqs=None, num_rows=None)
        return super().loss_from_hidden(hidden, weight, targets, local, loss, temperature=temperature)


class TupleFusedBackend(FusedBackend):
    def loss_from_hidden(self, hidden, weight, targets, batch, loss, *, temperature):
        out = super().loss_from_hidden(hidden, weight, targets, batch, loss, temperature=temperature)
        return out.output, out.logprobs, out.entropy


class DecliningBackend(FusedBackend):
    def loss_from_hidden(self, hidden, weight, targets, batch, loss, *, temperature):
        return None


class StringPriorityBackend(FusedBackend):
    priority = "high"


def test_check_logprob_backend_checks_loss_from_hidden():
    check_logprob_backend(FusedBackend())
    check_logprob_backend(DecliningBackend())
    with pytest.raises(AssertionError, match=r"WrongFusedBackend: loss_from_hidden: loss ClippedPG over 1 micro"):
        check_logprob_backend(WrongFusedBackend())
    with pytest.raises(AssertionError, match=r"loss_from_hidden: loss ClippedPG over 2 micro-batch\(es\)"):
        check_logprob_backend(LocalCountFusedBackend())
    with pytest.raises(AssertionError, match=r"loss_from_hidden: returned tuple; expected rlsdk.HiddenLossOutput"):
        check_logprob_backend(TupleFusedBackend())
    with pytest.raises(AssertionError, match=r"StringPriorityBackend: priority must be an integer"):
        check_logprob_backend(StringPriorityBackend())


def test_check_logprob_backend():
    check_logprob_backend(REGISTRY.create("logprob_backend", "torch"))
    with pytest.raises(AssertionError, match=r"logprob_backend NoTemperatureBackend: values: logprobs differs"):
        check_logprob_backend(NoTemperatureBackend())
    with pytest.raises(AssertionError, match=r"entropy: entropy must be None when with_entropy=False"):
        check_logprob_backend(AlwaysEntropyBackend())


# --------------------------------------------------------------------------------------------------
# The fixtures, as a plugin author's test file sees them


def test_fixtures_in_a_plugin_authors_test_file(pytester):
    pytester.makepyfile(
        my_plugin=textwrap.dedent(
            """
            import rlsdk

            class Reinforce:
                def __call__(self, logprobs, batch):
                    return rlsdk.LossOutput(rlsdk.aggregate(-batch.advantages * logprobs, batch))

            @rlsdk.hookimpl
            def register_losses(register):
                register("my_reinforce", Reinforce)
            """
        ),
        test_author=textwrap.dedent(
            """
            import rlsdk
            import rlsdk.testing
            import my_plugin

            def test_registry(rlsdk_registry):
                registry = rlsdk_registry(my_plugin)
                assert "my_reinforce" in registry.names("loss") and "grpo" in registry.names("advantage")
                rlsdk.testing.check_loss(registry.create("loss", "my_reinforce"))

            def test_batches(rlsdk_rollout_batch, rlsdk_train_batch):
                assert isinstance(rlsdk_rollout_batch, rlsdk.RolloutBatch)
                assert rlsdk_train_batch.mask.shape == (8, 6)
                rlsdk.testing.check_advantage(rlsdk.create("advantage", "grpo"), rlsdk_rollout_batch)

            def test_policy_and_examples(rlsdk_policy, rlsdk_examples):
                sampler = rlsdk.create("sampler", "group", n=2, max_new_tokens=2)
                rlsdk.testing.check_sampler(sampler, rlsdk_policy, rlsdk_examples)

            def test_engine(rlsdk_engine, rlsdk_examples):
                rlsdk.testing.check_engine(rlsdk_engine)
                sampler = rlsdk.create("sampler", "group", n=2, max_new_tokens=2)
                rlsdk.testing.check_sampler(sampler, rlsdk_engine, rlsdk_examples)

            def test_a_broken_loss_fails(rlsdk_train_batch):
                class Local:
                    def __call__(self, logprobs, batch):
                        return rlsdk.LossOutput((-batch.advantages * logprobs * batch.mask).sum() / batch.mask.sum())
                rlsdk.testing.check_loss(Local(), rlsdk_train_batch)
            """
        ),
    )
    pytester.syspathinsert()
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: loss Local: micro-batch invariance*"])
