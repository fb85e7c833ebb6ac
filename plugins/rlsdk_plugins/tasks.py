"""Built-in tasks: prompts with verifiable answers.

=============  ======================  ==============================================================
name           prompt -> answer        options
=============  ======================  ==============================================================
``reverse``    ``"rev 047="`` ->       ``min_digits=3``, ``max_digits=3``, ``eval_size=200``
               ``"740"``
``sort``       ``"sort 407="`` ->      ``min_digits=3``, ``max_digits=3``, ``eval_size=200``
               ``"047"``
``addition``   ``"57+802="`` ->        ``digits=3``, ``eval_size=200``
               ``"859"``
``jsonl``      a user's rows           ``path``, ``eval_path=None``, ``eval_fraction=0.1``,
                                       ``prompt_key="prompt"``, ``answer_key="answer"``
=============  ======================  ==============================================================

The generated tasks (``reverse``, ``sort``, ``addition``) use only characters of the tiny character-level
policy's alphabet ``"0123456789 +-*/=<>()[]:;,.?!abcdefghijklmnopqrstuvwxyz"``.

Every task is stateless: ``sample(n, generator)`` takes all its randomness from ``generator``, so the same
generator state gives the same examples and a resumed run sees the same data. ``eval_examples()`` is a
fixed held-out set drawn from a seed derived from the task's name and data options (not from
``eval_size``: a smaller eval set is a prefix of a larger one), and ``sample`` never returns one of its
prompts (a training draw that hits a held-out prompt is drawn again; in a small prompt space, e.g. the 90
two-digit strings, this visibly thins the training share of the held-out prompts' kind).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

import rlsdk
from rlsdk import ConfigError, Example
from rlsdk.validation import check_int, check_number

__all__ = ["ReverseTask", "SortTask", "AdditionTask", "JsonlTask"]

_EVAL_CHUNK = 256  # eval prompts are drawn in fixed-size chunks, so the stream does not depend on eval_size


def _seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (stable across processes and Python versions, unlike ``hash``)."""
    text = ":".join(str(p) for p in ("rlsdk-eval", *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") & (2**63 - 1)


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"sample: n must be a non-negative integer, got {n!r}")


class _GeneratedTask:
    """Shared machinery of the generated tasks: a held-out set and rejection of its prompts.

    A subclass sets ``name``, defines ``_draw(n, generator) -> list[(prompt, answer)]`` (``n``
    independent draws), ``_num_prompts()`` (how many distinct prompts ``_draw`` can return) and
    ``_seed_key()`` (the options that define the data distribution), then calls ``_build_eval``.
    """

    name: str = ""

    def _draw(self, n: int, generator: torch.Generator) -> list[tuple[str, str]]:
        raise NotImplementedError

    def _num_prompts(self) -> int:
        raise NotImplementedError

    def _seed_key(self) -> tuple[object, ...]:
        raise NotImplementedError

    def _build_eval(self, eval_size: int) -> None:
        eval_size = check_int(eval_size, "task.eval_size", low=0)
        space = self._num_prompts()
        if eval_size > space // 2:
            raise ConfigError(
                f"task.eval_size={eval_size} is too large for task {self.name!r} with these options: it has only "
                f"{space} distinct prompts and at least half must stay for training; "
                f"use task.eval_size <= {space // 2} or allow more digits"
            )
        self.eval_size = eval_size
        generator = torch.Generator().manual_seed(_seed(self.name, *self._seed_key()))
        pairs: dict[str, str] = {}
        while len(pairs) < eval_size:
            for prompt, answer in self._draw(_EVAL_CHUNK, generator):
                if len(pairs) < eval_size:
                    pairs.setdefault(prompt, answer)
        self._eval_pairs: tuple[tuple[str, str], ...] = tuple(pairs.items())
        self._held_out = frozenset(pairs)

    def sample(self, n: int, generator: torch.Generator) -> list[Example]:
        """Draw ``n`` training examples (with replacement, never a held-out prompt).

        Args:
            n: Number of examples.
            generator: The only source of randomness (a CPU or device ``torch.Generator``).

        Returns:
            ``n`` examples.
        """
        _check_n(n)
        out: list[Example] = []
        while len(out) < n:
            for prompt, answer in self._draw(n - len(out), generator):
                if prompt not in self._held_out:
                    out.append(Example(prompt, answer))
        return out

    def eval_examples(self) -> list[Example]:
        """The fixed held-out set (``eval_size`` distinct prompts, the same on every call)."""
        return [Example(prompt, answer) for prompt, answer in self._eval_pairs]

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({options})"


def _digit_strings(n: int, min_digits: int, max_digits: int, generator: torch.Generator) -> list[str]:
    """``n`` digit strings: a length uniform in ``[min_digits, max_digits]``, then uniform digits."""
    device = generator.device
    lengths = torch.randint(min_digits, max_digits + 1, (n,), generator=generator, device=device).tolist()
    digits = torch.randint(0, 10, (n, max_digits), generator=generator, device=device).tolist()
    return ["".join(str(d) for d in row[:length]) for row, length in zip(digits, lengths)]


class _DigitStringTask(_GeneratedTask):
    """A task on a random digit string ``s`` whose length is uniform in ``[min_digits, max_digits]``."""

    prefix: str = ""

    def __init__(self, min_digits: int = 3, max_digits: int = 3, eval_size: int = 200):
        self.min_digits = check_int(min_digits, "task.min_digits", low=1)
        self.max_digits = check_int(max_digits, "task.max_digits", low=1)
        if max_digits < min_digits:
            raise ConfigError(
                f"task.max_digits={max_digits} is smaller than task.min_digits={min_digits}; "
                "the length range is inclusive, so max_digits must be >= min_digits"
            )
        self._build_eval(eval_size)

    def answer(self, s: str) -> str:
        """The answer for digit string ``s``."""
        raise NotImplementedError

    def _draw(self, n: int, generator: torch.Generator) -> list[tuple[str, str]]:
        strings = _digit_strings(n, self.min_digits, self.max_digits, generator)
        return [(f"{self.prefix} {s}=", self.answer(s)) for s in strings]

    def _num_prompts(self) -> int:
        return sum(10**k for k in range(self.min_digits, self.max_digits + 1))

    def _seed_key(self) -> tuple[object, ...]:
        return (self.min_digits, self.max_digits)


class ReverseTask(_DigitStringTask):
    """Reverse a digit string: prompt ``"rev {s}="``, answer ``s[::-1]``.

    Example: ``"rev 0472="`` -> ``"740"`` .

    Args:
        min_digits: Shortest string (>= 1).
        max_digits: Longest string (>= min_digits, inclusive).
        eval_size: Size of the held-out set (at most half of the distinct prompts).
    """

    name = "reverse"
    prefix = "rev"

    def answer(self, s: str) -> str:
        return s[::-1]


class SortTask(_DigitStringTask):
    """Sort the digits of a string: prompt ``"sort {s}="``, answer ``"".join(sorted(s))``.

    Example: ``"sort 0472="`` -> ``"047"`` .

    Args:
        min_digits: Shortest string (>= 1).
        max_digits: Longest string (>= min_digits, inclusive).
        eval_size: Size of the held-out set (at most half of the distinct prompts).
    """

    name = "sort"
    prefix = "sort"

    def answer(self, s: str) -> str:
        return "".join(sorted(s))


class AdditionTask(_GeneratedTask):
    """Add two integers: prompt ``"{a}+{b}="``, answer ``str(a + b)``, with ``a, b`` uniform in ``[0, 10**digits)``.

    Example: ``"57+802="`` -> ``"859"``. The answer is written most significant digit first, so the
    policy must produce the carry before it has written the digits that cause it; at the default
    ``digits=3`` this is hard for a ~100k-parameter model and separates algorithms within minutes.

    Args:
        digits: Most digits per operand (>= 1).
        eval_size: Size of the held-out set (at most half of the ``10**(2*digits)`` operand pairs).
    """

    name = "addition"

    def __init__(self, digits: int = 3, eval_size: int = 200):
        self.digits = check_int(digits, "task.digits", low=1)
        self._build_eval(eval_size)

    def _draw(self, n: int, generator: torch.Generator) -> list[tuple[str, str]]:
        # Operands from `digits` uniform decimal digits each: exactly uniform in [0, 10**digits), any size.
        rows = torch.randint(0, 10, (n, 2, self.digits), generator=generator, device=generator.device).tolist()
        out = []
        for a_digits, b_digits in rows:
            a = int("".join(map(str, a_digits)))
            b = int("".join(map(str, b_digits)))
            out.append((f"{a}+{b}=", str(a + b)))
        return out

    def _num_prompts(self) -> int:
        return 10 ** (2 * self.digits)

    def _seed_key(self) -> tuple[object, ...]:
        return (self.digits,)


# --------------------------------------------------------------------------------------------------
# User data


def _eval_fraction_of(prompt: str) -> float:
    """A number in ``[0, 1)`` fixed by the prompt alone (first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big") / 2**64


class JsonlTask:
    """Prompts and answers from a JSON-lines file.

    Each non-blank line is an object ``{"prompt": str, "answer": str | number, "metadata": dict}``
    (``metadata`` optional; the key names of prompt and answer are options). Numbers are converted to
    strings. Any malformed row is a :class:`rlsdk.ConfigError` naming the file and the 1-based line.

    The held-out set is ``eval_path`` when given (training rows whose prompt also appears there are
    dropped, so the sets stay disjoint; ``dropped`` counts them). Otherwise a row goes to the held-out
    set when ``u(prompt) < eval_fraction``, with ``u`` the first 8 bytes of the prompt's SHA-256 read as
    a fraction of ``2**64``: the split depends on the prompt alone, never on row order, and equal
    prompts always land on the same side.

    Args:
        path: The training file (required).
        eval_path: A separate held-out file, or None to split ``path``.
        eval_fraction: Expected fraction of ``path`` held out when ``eval_path`` is None, in ``[0, 1)``.
        prompt_key: The key of the prompt in each row.
        answer_key: The key of the answer in each row.

    Attributes:
        files: Absolute paths of the data files (hashed into the run manifest).
    """

    name = "jsonl"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        eval_path: str | os.PathLike[str] | None = None,
        eval_fraction: float = 0.1,
        prompt_key: str = "prompt",
        answer_key: str = "answer",
    ):
        if path is None or (isinstance(path, str) and not path.strip()):
            raise ConfigError(
                "task.path is required for task 'jsonl': the path of a JSON-lines file of prompts and answers"
            )
        self.eval_fraction = check_number(eval_fraction, "task.eval_fraction", low=0.0, high=1.0, high_open=True)
        for option, key in (("task.prompt_key", prompt_key), ("task.answer_key", answer_key)):
            if not isinstance(key, str) or not key:
                raise ConfigError(f"{option} must be a non-empty string, got {key!r}")
        self.prompt_key = prompt_key
        self.answer_key = answer_key
        self.path = self._resolve(path, "task.path")
        rows = self._load(self.path)
        if eval_path is None:
            self.eval_path = None
            self._eval = [ex for ex in rows if _eval_fraction_of(ex.prompt) < self.eval_fraction]
            self._train = [ex for ex in rows if _eval_fraction_of(ex.prompt) >= self.eval_fraction]
            self.dropped = 0
            if not self._train:
                raise ConfigError(
                    f"task 'jsonl': all {len(rows)} rows of {self.path} fell into the held-out split "
                    f"(task.eval_fraction={self.eval_fraction}); lower task.eval_fraction or give task.eval_path"
                )
        else:
            self.eval_path = self._resolve(eval_path, "task.eval_path")
            self._eval = self._load(self.eval_path)
            held_out = {ex.prompt for ex in self._eval}
            self._train = [ex for ex in rows if ex.prompt not in held_out]
            self.dropped = len(rows) - len(self._train)
            if not self._train:
                raise ConfigError(
                    f"task 'jsonl': every prompt of {self.path} also appears in task.eval_path={self.eval_path}; "
                    "no training rows are left"
                )
        self.files: list[str] = [self.path] + ([self.eval_path] if self.eval_path else [])

    @staticmethod
    def _resolve(path: str | os.PathLike[str], option: str) -> str:
        resolved = Path(path).expanduser().resolve()
        if not resolved.is_file():
            raise ConfigError(f"{option}={str(path)!r}: no such file ({resolved})")
        return str(resolved)

    def _load(self, path: str) -> list[Example]:
        """Parse and validate every row of ``path``."""
        examples = []
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                where = f"{path}, line {number}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ConfigError(f"{where}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
                examples.append(self._example(row, where))
        if not examples:
            raise ConfigError(f"{path}: the dataset is empty (no non-blank lines); task 'jsonl' needs at least one row")
        return examples

    def _example(self, row: Any, where: str) -> Example:
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: each row must be a JSON object, got {type(row).__name__}")
        pk, ak = self.prompt_key, self.answer_key
        if pk not in row:
            raise ConfigError(f"{where}: missing prompt key {pk!r} (task.prompt_key); keys: {sorted(row)}")
        prompt = row[pk]
        if not isinstance(prompt, str):
            raise ConfigError(f"{where}: prompt {pk!r} must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise ConfigError(f"{where}: prompt {pk!r} is empty")
        if ak not in row:
            raise ConfigError(f"{where}: missing answer key {ak!r} (task.answer_key); keys: {sorted(row)}")
        answer = row[ak]
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            raise ConfigError(f"{where}: answer {ak!r} must be a string or a number, got {json.dumps(answer)}")
        if isinstance(answer, float) and not math.isfinite(answer):
            raise ConfigError(f"{where}: answer {ak!r} must be finite, got {answer}")
        metadata = row.get("metadata", {})
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise ConfigError(f"{where}: 'metadata' must be a JSON object, got {type(metadata).__name__}")
        return Example(prompt, str(answer), dict(metadata))

    def __len__(self) -> int:
        """Number of training rows."""
        return len(self._train)

    def sample(self, n: int, generator: torch.Generator) -> list[Example]:
        """Draw ``n`` training rows uniformly with replacement.

        Args:
            n: Number of examples.
            generator: The only source of randomness.

        Returns:
            ``n`` examples (fresh objects; their ``metadata`` dicts are copies).
        """
        _check_n(n)
        if n == 0:
            return []
        index = torch.randint(0, len(self._train), (n,), generator=generator, device=generator.device).tolist()
        return [_copy(self._train[i]) for i in index]

    def eval_examples(self) -> list[Example]:
        """The held-out rows, in file order."""
        return [_copy(ex) for ex in self._eval]

    def __repr__(self) -> str:
        sizes = f"train={len(self._train)}, eval={len(self._eval)}"
        return f"JsonlTask(path={self.path!r}, eval_path={self.eval_path!r}, {sizes})"


def _copy(example: Example) -> Example:
    return Example(example.prompt, example.answer, copy.deepcopy(example.metadata))


@rlsdk.hookimpl
def register_tasks(register: Any) -> None:
    """Register the built-in tasks."""
    register("reverse", ReverseTask)
    register("sort", SortTask)
    register("addition", AdditionTask)
    register("jsonl", JsonlTask)
