"""A new sampler as a plugin file: group sampling that drops groups with nothing to learn from.

Used by docs/guide-sampling.md; tests/test_sphinx.py runs it as a script (the checks at the bottom)
and trains with it through ``rlsdk train --plugin docs/examples/custom_sampler.py
sampler.name=informative_groups``.

With a group-relative advantage (GRPO, RLOO, ...), a group whose completions all got the same reward
has zero advantage everywhere and contributes no gradient. This sampler wraps the built-in ``group``
sampler and keeps only the groups whose rewards differ (the filter of DAPO's dynamic sampling,
without DAPO's re-sampling to refill the batch). If no group differs (as in evaluation, which
samples one completion per prompt), the batch is kept whole.
The step's ``reward/*`` metrics are then over the kept groups.
"""

from __future__ import annotations

import torch

import rlsdk


# -- start sampler --
class InformativeGroups:
    """The ``group`` sampler, then only the groups whose rewards are not all equal."""

    def __init__(self, n: int = 8, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 16):
        # The trainer reads params.temperature (for the log-probs) and params.max_new_tokens (a length
        # normaliser); evaluation calls the sampler with params from eval_params (the protocol's
        # default: n=1 at eval.temperature). Building them checks the options.
        self.params = rlsdk.SamplingParams(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
        self.group = rlsdk.create("sampler", "group")

    def __call__(self, engine, examples, score, generator, params) -> rlsdk.RolloutBatch:
        batch = self.group(engine, examples, score, generator, params)  # generated and scored
        _, std, _ = rlsdk.group_stats(batch.rewards, batch.group_ids)
        keep = std > 0
        return batch if not keep.any() else select_rows(batch, keep)


def select_rows(batch: rlsdk.RolloutBatch, keep: torch.Tensor) -> rlsdk.RolloutBatch:
    """The rows of ``batch`` where ``keep [B]`` is true (every per-row field, tensor or list)."""
    rows = keep.nonzero().flatten().tolist()
    changes = {}
    per_row = ("rewards", "group_ids", "mask", "sequences", "attention_mask", "truncated", "old_logprobs",
               "ref_logprobs", "engine_logprobs", "weight_versions")  # fmt: skip
    for name in per_row:
        value = getattr(batch, name)
        changes[name] = None if value is None else value[keep]
    for name in ("prompts", "completions", "metadata"):
        changes[name] = [getattr(batch, name)[i] for i in rows]
    changes["reward_components"] = {k: v[keep] for k, v in batch.reward_components.items()}
    return batch.replace(**changes)


@rlsdk.hookimpl
def register_samplers(register):
    register("informative_groups", InformativeGroups)


# -- end sampler --


def main() -> None:
    """Sample with a tiny random policy and check that only informative groups remain."""
    # -- start checks --
    import rlsdk.testing

    policy = rlsdk.testing.make_policy(seed=0)  # a tiny random character-level policy
    engine = rlsdk.create("engine", "inprocess")  # samples from the policy in this process
    engine.update_weights(policy, version=0)
    examples = rlsdk.testing.make_examples(seed=0, n=3)
    starts_with_digit = rlsdk.create("reward", "format", pattern=r"[0-9].*")

    def score(batch: rlsdk.RolloutBatch) -> rlsdk.RolloutBatch:  # what the trainer passes
        rewards = torch.tensor(starts_with_digit(batch.prompts, batch.completions, batch.metadata))
        return batch.replace(rewards=rewards, reward_components={"format": rewards})

    sampler = InformativeGroups(n=4, max_new_tokens=4)
    full = sampler.group(engine, examples, score, torch.Generator().manual_seed(0), sampler.params)
    kept = sampler(engine, examples, score, torch.Generator().manual_seed(0), sampler.params)
    assert full.rewards.shape == (12,) and kept.rewards.shape[0] in (4, 8, 12)
    _, std, _ = rlsdk.group_stats(kept.rewards, kept.group_ids)
    assert bool((std > 0).all()), "every kept group has rewards that differ"
    assert len(kept.completions) == kept.mask.shape[0] == kept.sequences.shape[0]

    # check_sampler wants completions for every example, which a filter breaks by design:
    # check the wrapped sampler, and test the filter on its own as above.
    rlsdk.testing.check_sampler(rlsdk.create("sampler", "group", n=4, max_new_tokens=4), policy, examples)
    # -- end checks --
    print(f"informative_groups: kept {kept.rewards.shape[0]} of {full.rewards.shape[0]} completions")


if __name__ == "__main__":
    main()
