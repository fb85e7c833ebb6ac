"""Tests of the built-in tasks (plugins/rlsdk_plugins/tasks.py)."""

from __future__ import annotations

import hashlib
import json
import random
import re
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rlsdk
import rlsdk.kinds
from rlsdk import ConfigError, Example

ALPHABET = set("0123456789 +-*/=<>()[]:;,.?!abcdefghijklmnopqrstuvwxyz")


def create(kind: str, name: str, **options):
    """``rlsdk.create`` that tolerates *other* plugins of this repo failing to load while they are written."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"rlsdk: plugin rlsdk:(?!tasks |rewards )", category=RuntimeWarning)
        return rlsdk.create(kind, name, **options)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- independent answers --------------------------------------------------------------------------


def reverse_reference(s: str) -> str:
    out = ""
    for ch in s:
        out = ch + out
    return out


def sort_reference(s: str) -> str:
    counts = [0] * 10
    for ch in s:
        counts[ord(ch) - ord("0")] += 1
    return "".join(str(d) * counts[d] for d in range(10))


def addition_reference(a: str, b: str) -> str:
    # Schoolbook addition on digit strings, no int() of the operands.
    a, b = a[::-1], b[::-1]
    carry, digits = 0, []
    for i in range(max(len(a), len(b))):
        total = carry + (int(a[i]) if i < len(a) else 0) + (int(b[i]) if i < len(b) else 0)
        digits.append(str(total % 10))
        carry = total // 10
    if carry:
        digits.append(str(carry))
    return "".join(reversed(digits)).lstrip("0") or "0"


def check_example(name: str, ex: Example) -> None:
    assert set(ex.prompt) <= ALPHABET and set(ex.answer) <= ALPHABET
    if name in ("reverse", "sort"):
        prefix = "rev" if name == "reverse" else "sort"
        m = re.fullmatch(prefix + r" (\d+)=", ex.prompt)
        assert m, ex.prompt
        expected = reverse_reference(m.group(1)) if name == "reverse" else sort_reference(m.group(1))
    else:
        m = re.fullmatch(r"(\d+)\+(\d+)=", ex.prompt)
        assert m, ex.prompt
        for operand in m.groups():
            assert operand == "0" or not operand.startswith("0")
        expected = addition_reference(*m.groups())
    assert ex.answer == expected, (ex.prompt, ex.answer, expected)


# -- generated tasks ------------------------------------------------------------------------------

NAMES = ["reverse", "sort", "addition"]


@pytest.mark.parametrize("name", NAMES)
def test_created_through_registry_and_protocol(name):
    task = create("task", name)
    assert rlsdk.kinds.conform("task", task, "task") is task
    assert task.name == name
    assert rlsdk.get_registry().owner("task", name) == "rlsdk:tasks"


@pytest.mark.parametrize("name", NAMES)
def test_sample_is_deterministic_in_the_generator(name):
    task = create("task", name)
    a = task.sample(64, gen(1))
    b = create("task", name).sample(64, gen(1))  # a fresh object: the task holds no sampling state
    assert a == b
    assert a != task.sample(64, gen(2))
    g = gen(3)
    first = task.sample(16, g)
    state = g.get_state()
    second = task.sample(16, g)
    assert first != second  # the generator advanced
    g.set_state(state)
    assert task.sample(16, g) == second  # resuming from a saved state replays exactly


@pytest.mark.parametrize("name", NAMES)
def test_answers_are_correct(name):
    task = create("task", name)
    examples = task.sample(500, gen(0)) + task.eval_examples()
    for ex in examples:
        check_example(name, ex)


@pytest.mark.parametrize("name", NAMES)
def test_eval_set_fixed_sized_distinct_and_disjoint(name):
    task = create("task", name, eval_size=150)
    evals = task.eval_examples()
    assert len(evals) == 150
    assert len({ex.prompt for ex in evals}) == 150
    assert evals == task.eval_examples() == create("task", name, eval_size=150).eval_examples()
    held_out = {ex.prompt for ex in evals}
    train = task.sample(20_000, gen(7))
    assert not held_out & {ex.prompt for ex in train}


def test_eval_seed_depends_on_data_options_not_eval_size():
    small = create("task", "reverse", eval_size=50).eval_examples()
    large = create("task", "reverse", eval_size=200).eval_examples()
    assert large[:50] == small
    five = create("task", "reverse", min_digits=5, max_digits=5).eval_examples()
    assert all(len(ex.answer) == 5 for ex in five)
    assert create("task", "sort").eval_examples() != [
        Example(ex.prompt.replace("rev", "sort"), sort_reference(ex.answer)) for ex in large
    ]


def test_reverse_exhausts_training_prompts_without_eval_in_a_tiny_space():
    task = create("task", "reverse", min_digits=1, max_digits=1, eval_size=5)
    held_out = {ex.prompt for ex in task.eval_examples()}
    seen = {ex.prompt for ex in task.sample(400, gen(0))}
    every = {f"rev {d}=" for d in range(10)}
    assert held_out | seen == every and not held_out & seen


def test_lengths_cover_the_inclusive_range_and_digits_are_uniform():
    # A small eval set: held-out prompts are re-drawn, which thins the 90 two-digit strings otherwise.
    task = create("task", "reverse", min_digits=2, max_digits=5, eval_size=5)
    examples = task.sample(4000, gen(0))
    lengths = Counter(len(ex.answer) for ex in examples)
    assert set(lengths) == {2, 3, 4, 5}
    assert all(800 < c < 1200 for c in lengths.values()), lengths
    digits = Counter("".join(ex.answer for ex in examples))
    total = sum(digits.values())
    assert set(digits) == set("0123456789")
    assert all(abs(c / total - 0.1) < 0.02 for c in digits.values()), digits


def test_addition_operands_uniform_below_10_to_the_digits():
    task = create("task", "addition", digits=3)
    operands = []
    for ex in task.sample(3000, gen(0)):
        a, b = ex.prompt[:-1].split("+")
        operands += [int(a), int(b)]
    assert max(operands) < 1000 and min(operands) >= 0
    assert 0.25 < sum(x < 300 for x in operands) / len(operands) < 0.35
    assert any(x < 10 for x in operands)  # short operands appear (uniform on [0, 1000))
    answers = [int(ex.answer) for ex in task.sample(3000, gen(1))]
    assert max(answers) >= 1000  # carries into a fourth digit occur


def test_addition_large_digits():
    task = create("task", "addition", digits=25, eval_size=10)
    for ex in task.sample(20, gen(0)):
        check_example("addition", ex)


def test_sample_edge_counts():
    task = create("task", "sort")
    assert task.sample(0, gen(0)) == []
    with pytest.raises(ValueError, match="non-negative"):
        task.sample(-1, gen(0))
    assert task.eval_examples() is not task.eval_examples()


@pytest.mark.parametrize(
    "name, options, option",
    [
        ("reverse", {"min_digits": 0}, "task.min_digits"),
        ("reverse", {"min_digits": 2.5}, "task.min_digits"),
        ("sort", {"max_digits": True}, "task.max_digits"),
        ("sort", {"min_digits": 5, "max_digits": 4}, "task.max_digits"),
        ("reverse", {"eval_size": -1}, "task.eval_size"),
        ("reverse", {"min_digits": 1, "max_digits": 1}, "task.eval_size"),  # 10 prompts, eval_size 200
        ("addition", {"digits": 0}, "task.digits"),
        ("addition", {"digits": "3"}, "task.digits"),
        ("addition", {"digits": 1}, "task.eval_size"),  # 100 pairs, eval_size 200
    ],
)
def test_invalid_options_raise_config_error_naming_the_option(name, options, option):
    with pytest.raises(ConfigError, match=re.escape(option)):
        create("task", name, **options)


def test_unknown_option_is_rejected_by_create():
    with pytest.raises(ConfigError, match="digits"):
        create("task", "addition", digts=3)


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(["reverse", "sort"]),
    low=st.integers(1, 6),
    extra=st.integers(0, 3),
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(0, 40),
)
def test_property_digit_tasks(name, low, extra, seed, n):
    high = low + extra
    space = sum(10**k for k in range(low, high + 1))
    task = create("task", name, min_digits=low, max_digits=high, eval_size=min(20, space // 2))
    held_out = {ex.prompt for ex in task.eval_examples()}
    examples = task.sample(n, gen(seed))
    assert len(examples) == n
    for ex in examples:
        check_example(name, ex)
        assert low <= len(ex.answer) <= high
        assert ex.prompt not in held_out


@settings(max_examples=30, deadline=None)
@given(digits=st.integers(2, 6), seed=st.integers(0, 2**31 - 1))
def test_property_addition(digits, seed):
    task = create("task", "addition", digits=digits, eval_size=20)
    held_out = {ex.prompt for ex in task.eval_examples()}
    for ex in task.sample(30, gen(seed)):
        check_example("addition", ex)
        assert ex.prompt not in held_out
        assert all(len(x) <= digits for x in ex.prompt[:-1].split("+"))


# -- jsonl ----------------------------------------------------------------------------------------


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rows(n: int) -> list[dict]:
    return [{"prompt": f"q{i}?", "answer": str(i * 7), "metadata": {"id": i}} for i in range(n)]


def hash_fraction(prompt: str) -> float:
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
    return int(digest[:16], 16) / float(16**16)


def test_jsonl_round_trip_with_eval_file(tmp_path):
    train = write(
        tmp_path / "train.jsonl",
        [
            json.dumps({"prompt": "2+2=", "answer": 4}),
            "",
            json.dumps({"prompt": "half?", "answer": 0.5, "metadata": {"level": 1, "tags": ["a"]}}),
            "   ",
            json.dumps({"prompt": "name?", "answer": "bob", "metadata": None}),
        ],
    )
    evalf = write(tmp_path / "eval.jsonl", [json.dumps({"prompt": "3+3=", "answer": "6"})])
    task = create("task", "jsonl", path=str(train), eval_path=str(evalf))
    assert rlsdk.kinds.conform("task", task, "jsonl") is task and task.name == "jsonl"
    assert task.files == [str(train.resolve()), str(evalf.resolve())]
    assert all(Path(f).is_absolute() for f in task.files)
    assert task.eval_examples() == [Example("3+3=", "6")]
    drawn = task.sample(200, gen(0))
    assert {(ex.prompt, ex.answer) for ex in drawn} == {("2+2=", "4"), ("half?", "0.5"), ("name?", "bob")}
    half = next(ex for ex in drawn if ex.prompt == "half?")
    assert half.metadata == {"level": 1, "tags": ["a"]}
    assert half.reward_metadata()["answer"] == "0.5"
    half.metadata["tags"].append("mutated")  # a caller's mutation must not reach the stored rows
    again = next(ex for ex in task.sample(200, gen(0)) if ex.prompt == "half?")
    assert again.metadata == {"level": 1, "tags": ["a"]}


def test_jsonl_custom_keys_and_sampling_determinism(tmp_path):
    path = write(tmp_path / "d.jsonl", [json.dumps({"q": f"p{i}", "a": i}) for i in range(20)])
    task = create("task", "jsonl", path=str(path), prompt_key="q", answer_key="a", eval_fraction=0.0)
    assert task.eval_examples() == []
    assert task.files == [str(path.resolve())]
    a = task.sample(50, gen(5))
    assert a == task.sample(50, gen(5)) and a != task.sample(50, gen(6))
    assert len({ex.prompt for ex in a}) < 50  # with replacement
    assert all(ex.answer == ex.prompt[1:] for ex in a)


def test_jsonl_split_by_prompt_hash_independent_of_row_order(tmp_path):
    data = rows(300)
    first = write(tmp_path / "a.jsonl", [json.dumps(r) for r in data])
    shuffled = data[:]
    random.Random(0).shuffle(shuffled)
    second = write(tmp_path / "b.jsonl", [json.dumps(r) for r in shuffled])
    t1 = create("task", "jsonl", path=str(first), eval_fraction=0.3)
    t2 = create("task", "jsonl", path=str(second), eval_fraction=0.3)
    eval1 = {ex.prompt for ex in t1.eval_examples()}
    assert eval1 == {ex.prompt for ex in t2.eval_examples()}
    assert eval1 == {r["prompt"] for r in data if hash_fraction(r["prompt"]) < 0.3}
    assert 50 < len(eval1) < 130
    train1 = {ex.prompt for ex in t1.sample(5000, gen(0))}
    assert train1 == {r["prompt"] for r in data} - eval1  # a partition; every training row is reachable
    assert [ex.prompt for ex in t1.eval_examples()] == [r["prompt"] for r in data if r["prompt"] in eval1]  # file order
    assert len(t1) == 300 - len(eval1)


def test_jsonl_duplicate_prompts_stay_on_one_side(tmp_path):
    data = rows(100) + rows(100)
    path = write(tmp_path / "d.jsonl", [json.dumps(r) for r in data])
    task = create("task", "jsonl", path=str(path), eval_fraction=0.5)
    held_out = {ex.prompt for ex in task.eval_examples()}
    assert not held_out & {ex.prompt for ex in task.sample(2000, gen(0))}


def test_jsonl_eval_file_overlap_is_dropped_from_training(tmp_path):
    data = rows(10)
    train = write(tmp_path / "t.jsonl", [json.dumps(r) for r in data])
    evalf = write(tmp_path / "e.jsonl", [json.dumps(r) for r in data[:3]])
    task = create("task", "jsonl", path=str(train), eval_path=str(evalf))
    assert task.dropped == 3 and len(task) == 7
    assert not {ex.prompt for ex in task.sample(500, gen(0))} & {r["prompt"] for r in data[:3]}
    with pytest.raises(ConfigError, match="no training rows"):
        create("task", "jsonl", path=str(evalf), eval_path=str(evalf))


BAD_ROWS = [
    ("{not json", "invalid JSON"),
    ('["prompt", "answer"]', "JSON object"),
    ("42", "JSON object"),
    ('{"answer": "1"}', "missing prompt"),
    ('{"prompt": "", "answer": "1"}', "prompt 'prompt' is empty"),
    ('{"prompt": "   ", "answer": "1"}', "is empty"),
    ('{"prompt": 5, "answer": "1"}', "must be a string"),
    ('{"prompt": "q"}', "missing answer"),
    ('{"prompt": "q", "answer": null}', "string or a number"),
    ('{"prompt": "q", "answer": [1]}', "string or a number"),
    ('{"prompt": "q", "answer": true}', "string or a number"),
    ('{"prompt": "q", "answer": NaN}', "finite"),
    ('{"prompt": "q", "answer": "1", "metadata": [1]}', "'metadata' must be a JSON object"),
    ('{"prompt": "q", "answer": "1", "metadata": "x"}', "'metadata' must be a JSON object"),
]


@pytest.mark.parametrize("bad, what", BAD_ROWS)
def test_jsonl_malformed_row_names_file_and_line(tmp_path, bad, what):
    path = write(tmp_path / "bad.jsonl", [json.dumps({"prompt": "ok", "answer": "1"}), "", bad])
    with pytest.raises(ConfigError) as info:
        create("task", "jsonl", path=str(path))
    message = str(info.value)
    assert f"{path.resolve()}, line 3" in message  # blank lines count toward the line number
    assert what in message


def test_jsonl_malformed_eval_file_is_named(tmp_path):
    train = write(tmp_path / "t.jsonl", [json.dumps(r) for r in rows(5)])
    evalf = write(tmp_path / "e.jsonl", ['{"prompt": "x"}'])
    with pytest.raises(ConfigError, match=re.escape(f"{evalf.resolve()}, line 1: missing answer")):
        create("task", "jsonl", path=str(train), eval_path=str(evalf))


def test_jsonl_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "bin.jsonl"
    path.write_bytes(b'{"prompt": "a", "answer": "1"}\n{"prompt": "\xff", "answer": "1"}\n')
    with pytest.raises(ConfigError, match="line 2: not valid UTF-8"):
        create("task", "jsonl", path=str(path))


def test_jsonl_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match="task.path is required"):
        create("task", "jsonl")
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ConfigError, match=re.escape("task.path") + ".*nope.jsonl.*no such file"):
        create("task", "jsonl", path=str(missing))
    with pytest.raises(ConfigError, match="no such file"):
        create("task", "jsonl", path=str(tmp_path))  # a directory
    good = write(tmp_path / "g.jsonl", [json.dumps(r) for r in rows(5)])
    with pytest.raises(ConfigError, match="task.eval_path"):
        create("task", "jsonl", path=str(good), eval_path=str(missing))
    empty = write(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(ConfigError, match="empty"):
        create("task", "jsonl", path=str(empty))
    for bad in (-0.1, 1.0, "0.1", True):
        with pytest.raises(ConfigError, match="task.eval_fraction"):
            create("task", "jsonl", path=str(good), eval_fraction=bad)
    with pytest.raises(ConfigError, match="task.prompt_key"):
        create("task", "jsonl", path=str(good), prompt_key="")


def test_jsonl_everything_held_out_is_an_error(tmp_path):
    prompt = next(f"p{i}" for i in range(1000) if hash_fraction(f"p{i}") < 0.5)
    path = write(tmp_path / "one.jsonl", [json.dumps({"prompt": prompt, "answer": "1"})])
    with pytest.raises(ConfigError, match="held-out split"):
        create("task", "jsonl", path=str(path), eval_fraction=0.5)
