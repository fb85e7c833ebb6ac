"""Conformance checks of tasks: :func:`check_task`."""

from __future__ import annotations

from typing import Any

from rlsdk.testing._builders import _conform, _fail, _seeded

__all__ = ["check_task"]


def check_task(task: Any, seed: int = 0) -> None:
    """Check that ``task`` honours the :class:`rlsdk.Task` contract.

    ``task.sample(n, generator)`` must return ``n`` :class:`rlsdk.Example` (non-empty string prompts,
    string answers) determined by the generator alone (the same examples under a different global
    RNG state), and ``[]`` for ``n = 0``; ``task.eval_examples()`` must return a list of examples,
    the same on every call.

    Args:
        task: The task (e.g. ``registry.create("task", "my_task")``).
        seed: Seed of the generator.

    Raises:
        AssertionError: ``"task <Name>: <property>: <details>"`` for the first property that fails.
    """
    import torch

    from rlsdk.types import Example

    _conform("task", task)

    def draw(n: int, global_seed: int) -> Any:
        with _seeded(global_seed):
            return task.sample(n, torch.Generator().manual_seed(seed))

    first = draw(4, seed)
    if not isinstance(first, list) or len(first) != 4:
        _fail("task", task, "sample", f"sample(4, generator) returned {first!r:.100}; expected a list of 4 Examples")
    for i, example in enumerate(first):
        if not isinstance(example, Example):
            _fail("task", task, "sample", f"item {i} is a {type(example).__name__}; expected rlsdk.Example")
        if not isinstance(example.prompt, str) or not example.prompt or not isinstance(example.answer, str):
            _fail(
                "task",
                task,
                "sample",
                f"item {i} {example!r}: prompt must be a non-empty string and answer a string",
            )
    if draw(4, seed + 1) != first:
        _fail(
            "task",
            task,
            "deterministic",
            "the same generator seed gave different examples; draw only from `generator`",
        )
    if draw(0, seed) != []:
        _fail("task", task, "sample", "sample(0, generator) must return []")
    evals = task.eval_examples()
    if not isinstance(evals, list) or not all(isinstance(e, Example) for e in evals):
        _fail(
            "task",
            task,
            "eval_examples",
            f"eval_examples() returned {evals!r:.100}; expected a list of rlsdk.Example",
        )
    if task.eval_examples() != evals:
        _fail("task", task, "eval_examples", "eval_examples() returned different examples on a second call")
