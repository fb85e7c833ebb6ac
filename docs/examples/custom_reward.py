"""A new reward and a new task as a plugin file.

Used by docs/guide-rewards.md; tests/test_sphinx.py runs it as a script (the checks at the bottom)
and trains with it through ``rlsdk train --plugin docs/examples/custom_reward.py task.name=copy
rewards.prefix_match=0.5``.

- task ``copy``: prompt ``"copy {s}="`` for a digit string ``s``, answer ``s``;
- reward ``prefix_match``: ``r = |common prefix of y and answer| / |answer|`` (after stripping
  whitespace), partial credit that rewards getting the first characters right first.
"""

from __future__ import annotations

import torch

import rlsdk
from rlsdk.validation import check_int


# -- start reward --
class PrefixMatch:
    """``r = |common prefix(strip(y), answer)| / |answer|`` (1.0 for an empty answer and completion)."""

    def __call__(self, prompts: list[str], completions: list[str], metadata: list[dict]) -> list[float]:
        scores = []
        for completion, meta in zip(completions, metadata):
            answer, text = str(meta["answer"]).strip(), completion.strip()
            common = 0
            while common < min(len(answer), len(text)) and answer[common] == text[common]:
                common += 1
            scores.append(common / len(answer) if answer else float(not text))
        return scores


@rlsdk.hookimpl
def register_rewards(register):
    register("prefix_match", PrefixMatch)


# -- end reward --


# -- start task --
class CopyTask:
    """Copy a digit string: prompt ``"copy {s}="``, answer ``s``, ``s`` of ``digits`` uniform digits.

    ``eval_examples`` is a fixed set of ``eval_size`` distinct strings; training never draws them.
    """

    def __init__(self, digits: int = 3, eval_size: int = 50):
        self.digits = check_int(digits, "task.digits", low=1, high=9)
        self.eval_size = check_int(eval_size, "task.eval_size", low=0, high=10**self.digits // 2)
        generator = torch.Generator().manual_seed(1234)  # the held-out set is the same in every run
        held_out: dict[str, None] = {}
        while len(held_out) < self.eval_size:
            held_out.update(dict.fromkeys(self._strings(self.eval_size, generator)))
        self.held_out = list(held_out)[: self.eval_size]

    def _strings(self, n: int, generator: torch.Generator) -> list[str]:
        digits = torch.randint(0, 10, (n, self.digits), generator=generator)
        return ["".join(str(int(d)) for d in row) for row in digits]

    def sample(self, n: int, generator: torch.Generator) -> list[rlsdk.Example]:
        out: list[rlsdk.Example] = []
        while len(out) < n:  # draw only from `generator`, so the seed fixes the data order
            out += [
                rlsdk.Example(f"copy {s}=", s) for s in self._strings(n - len(out), generator) if s not in self.held_out
            ]
        return out

    def eval_examples(self) -> list[rlsdk.Example]:
        return [rlsdk.Example(f"copy {s}=", s) for s in self.held_out]


@rlsdk.hookimpl
def register_tasks(register):
    register("copy", CopyTask)


# -- end task --


def main() -> None:
    """Check the reward's values, the task's examples and rlsdk's conformance checks."""
    # -- start checks --
    import rlsdk.testing

    reward = PrefixMatch()
    scores = reward(["copy 123="] * 4, ["123", "12", " 129 ", "x"], [{"answer": "123"}] * 4)
    assert scores == [1.0, 2 / 3, 2 / 3, 0.0]
    rlsdk.testing.check_reward(reward)  # one finite float per completion, deterministic, inputs unchanged

    task = CopyTask(digits=3, eval_size=20)
    examples = task.sample(4, torch.Generator().manual_seed(0))
    assert all(e.prompt == f"copy {e.answer}=" and e.answer not in task.held_out for e in examples)
    rlsdk.testing.check_task(task)  # examples drawn only from the generator, a fixed eval set

    # The built-in rewards are plain components too:
    exact = rlsdk.create("reward", "exact_match")
    assert exact(["copy 123="] * 2, ["123", "12"], [{"answer": "123"}] * 2) == [1.0, 0.0]
    # -- end checks --
    print("prefix_match and copy: all checks passed")


if __name__ == "__main__":
    main()
