"""Multi-seed experiments: every arm of a comparison trained over the same seeds, each run scored.

An experiment is described by a YAML file::

    name: loss-swap                  # default: the file's stem
    seeds: 5                         # the seeds 0..4, or a list such as [0, 1, 2]
    config: base.yaml                # optional training config, relative to this file
    overrides: [train.steps=200]     # for every run
    arms:                            # arm name -> its overrides; the first arm is the baseline
      grpo: []
      reinforce: [loss.name=reinforce]
    tasks:                           # optional: task name -> overrides (default: the config's task)
      reverse: []
      addition: [task.name=addition, task.digits=2]
    score: eval/reward               # what one run scores (see below)
    last: 20                         # for a training metric: the mean over the last 20 steps

An **ablation** replaces ``arms`` with the full method and one change at a time::

    full: [loss.kl_coef=0.04]        # the full method's overrides
    ablations:                       # each arm is the full method plus one change
      no_kl: [loss.kl_coef=0]
      no_entropy: [loss.entropy_coef=0]

which makes the arms ``full``, ``no_kl`` and ``no_entropy`` (``full`` first, the baseline), and sets
``paired: true``: the comparison pairs the runs of each arm with the full method's by seed.

A run's config is built from the config file, then ``overrides``, the task's overrides, the arm's
overrides, and finally ``seed=<k>``. Every arm runs the same seeds (common random numbers, so arms
can also be compared seed by seed: Henderson et al., *Deep RL that Matters*, AAAI 2018).

The score of a run is either an evaluation metric (a key starting with ``eval/``: the final policy is
scored on the task's held-out examples, greedily, as ``rlsdk eval`` does) or a training metric from
``metrics.jsonl``: averaged over the last ``last`` steps (less noisy than the last step alone), over
the whole run (``auc(reward/mean)``), or the step at which it first reaches a threshold
(``steps_to(reward/mean, 0.9)``): two arms that both end at the ceiling may differ in how fast they
get there (see :func:`score_run`). The scores of an arm form the ``(runs, tasks)`` array that
:mod:`rlsdk.research.stats` and :func:`rlsdk.research.compare.compare` take.

The experiment folder::

    EXP_DIR/experiment.yaml                the resolved spec
    EXP_DIR/runs/<arm>/<task>/seed_<k>/    one run folder per arm, task and seed
    EXP_DIR/scores.json                    every finished run's score (rewritten after each run)

Running an experiment again continues it: finished runs (with ``summary.json``) are kept, an
interrupted run resumes from its latest checkpoint, and ``seeds`` may grow. Any other change to the
spec is refused, so the runs of one folder always answer the same question.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rlsdk.errors import ConfigError
from rlsdk.provenance.rundir import FolderLock, atomic_write_text, read_metrics

__all__ = [
    "ExperimentSpec",
    "load_spec",
    "run_experiment",
    "score_run",
    "parse_score",
    "describe_score",
    "load_scores",
    "run_path",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_KEYS = ("name", "seeds", "config", "overrides", "arms", "full", "ablations", "tasks", "score", "last", "paired")


@dataclass
class ExperimentSpec:
    """A resolved experiment file (see the module docstring).

    Attributes:
        name: The experiment's name.
        seeds: The root seeds every arm runs, in order.
        arms: Arm name -> ``key=value`` overrides; the first arm is the baseline.
        tasks: Task name -> ``key=value`` overrides (``{"default": []}`` when the file names none).
        config: The training config file (absolute path), or None for the defaults.
        overrides: ``key=value`` overrides for every run.
        score: The metric a run is scored by (``eval/<key>`` or a key of ``metrics.jsonl``).
        last: For a training metric, how many of the last steps are averaged.
        paired: Compare arms seed by seed (:func:`rlsdk.research.compare.compare`'s ``paired``);
            true for an ablation.
    """

    name: str
    seeds: list[int]
    arms: dict[str, list[str]]
    tasks: dict[str, list[str]] = field(default_factory=lambda: {"default": []})
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    score: str = "eval/reward"
    last: int = 20
    paired: bool = False

    def run_overrides(self, arm: str, task: str, seed: int) -> list[str]:
        """The overrides of one run, in the order they apply."""
        return [*self.overrides, *self.tasks[task], *self.arms[arm], f"seed={seed}"]

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (what ``experiment.yaml`` holds)."""
        return asdict(self)


def _overrides(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise ConfigError(f"{where} must be a list of key=value strings, e.g. [loss.name=reinforce], got {value!r}")
    return list(value)


def _named(value: Any, where: str, required: bool) -> dict[str, list[str]]:
    if value is None and not required:
        return {"default": []}
    if not isinstance(value, dict) or not value:
        raise ConfigError(
            f"{where} must map names to lists of key=value overrides, "
            f"e.g. {{grpo: [], reinforce: [loss.name=reinforce]}}; got {value!r}"
        )
    out = {}
    for name, overrides in value.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{where} name {name!r} is not valid: use letters, digits and _.+- (it names a folder)")
        out[name] = _overrides(overrides, f"{where}.{name}")
    return out


def _seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return list(range(value))
    if (
        isinstance(value, list)
        and value
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
    ):
        if len(set(value)) != len(value):
            raise ConfigError(f"{where} lists a seed twice: {value!r}")
        return list(value)
    raise ConfigError(f"{where} must be a count >= 1 or a list of distinct non-negative integers, got {value!r}")


def _read_spec(
    path: Path, kind: str, keys: tuple[str, ...], cli_overrides: list[str] | None
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Read an experiment or sweep file: ``(data, where, common)``, ``common`` holding the keys both
    kinds share, checked: ``name``, ``config`` (resolved), ``overrides`` (with ``cli_overrides``),
    ``score``, ``last``."""
    from rlsdk.config import load_yaml

    data = load_yaml(path, f"{kind} file")  # a missing or non-UTF-8 file, bad YAML, a key given twice: errors
    where = f"{kind} file {str(path)!r}"
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(keys)}")
    config = data.get("config")
    if config is not None:
        resolved = (path.parent / str(config)).resolve()
        if not resolved.is_file():
            raise ConfigError(f"{where}: config {str(config)!r} not found (looked for {str(resolved)!r})")
        config = str(resolved)
    score, last = data.get("score", "eval/reward"), data.get("last", 20)
    if not isinstance(score, str) or not score:
        raise ConfigError(f"{where}: score must be a metric name such as eval/reward or reward/mean, got {score!r}")
    try:
        parse_score(score)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not isinstance(last, int) or isinstance(last, bool) or last < 1:
        raise ConfigError(f"{where}: last must be an integer >= 1, got {last!r}")
    name = str(data.get("name", path.stem))
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: name {name!r} is not valid: use letters, digits and _.+-")
    overrides = [
        *_overrides(data.get("overrides"), f"{where}: overrides"),
        *_overrides(cli_overrides, "command-line overrides"),
    ]
    return data, where, {"name": name, "config": config, "overrides": overrides, "score": score, "last": last}


def load_spec(path: str | Path, overrides: list[str] | None = None, seeds: Any = None) -> ExperimentSpec:
    """Read and check an experiment file.

    Args:
        path: The YAML file.
        overrides: ``key=value`` overrides appended to the file's ``overrides`` (from the command line).
        seeds: Replaces the file's ``seeds`` (a count or a list).

    Raises:
        ConfigError: The file is missing or malformed; the message names the key and what is valid.
    """
    data, where, common = _read_spec(Path(path), "experiment", _KEYS, overrides)
    ablation = "full" in data or "ablations" in data
    if ablation and "arms" in data:
        raise ConfigError(
            f"{where} has 'arms' and 'full'/'ablations'; "
            "an experiment lists arms, an ablation the full method and its ablations"
        )
    if ablation:
        full = _overrides(data.get("full"), f"{where}: full")
        ablations = _named(data.get("ablations"), f"{where}: ablations", required=True)
        if "full" in ablations:
            raise ConfigError(f"{where}: 'full' names the full method; call the ablation something else")
        arms = {"full": full, **{name: [*full, *change] for name, change in ablations.items()}}
    elif "arms" in data:
        arms = _named(data.get("arms"), f"{where}: arms", required=True)
    else:
        raise ConfigError(
            f"{where} has no 'arms' (or 'full' and 'ablations'); give at least one, e.g. arms: {{grpo: []}}"
        )
    paired = data.get("paired", ablation)
    if not isinstance(paired, bool):
        raise ConfigError(f"{where}: paired must be true or false, got {paired!r}")
    return ExperimentSpec(
        seeds=_seeds(
            data.get("seeds", 3) if seeds is None else seeds, "seeds" if seeds is not None else f"{where}: seeds"
        ),
        arms=arms,
        tasks=_named(data.get("tasks"), f"{where}: tasks", required=False),
        paired=paired,
        **common,
    )


def run_path(exp_dir: str | Path, arm: str, task: str, seed: int) -> Path:
    """``EXP_DIR/runs/<arm>/<task>/seed_<seed>``."""
    return Path(exp_dir) / "runs" / arm / task / f"seed_{seed}"


_SUMMARY = re.compile(r"(auc|steps_to)\((.+?)(?:,\s*([-+0-9.eE]+))?\)")


def parse_score(score: str) -> tuple[str, str, float | None]:
    """Split a score into ``(summary, key, threshold)``: ``summary`` is ``eval``, ``last``, ``auc`` or ``steps_to``.

    Raises:
        ConfigError: ``auc(...)`` with a threshold, ``steps_to(...)`` without one, or an empty key.
    """
    if score.startswith("eval/"):
        return "eval", score, None
    match = _SUMMARY.fullmatch(score.strip())
    if not match:
        if not score or "(" in score:
            raise ConfigError(
                f"score {score!r} is not valid; use eval/<key>, <key> (the mean of the last steps), auc(<key>) "
                "or steps_to(<key>, <threshold>)"
            )
        return "last", score, None
    summary, key, threshold = match.group(1), match.group(2).strip(), match.group(3)
    if (summary == "steps_to") != (threshold is not None):
        raise ConfigError(f"score {score!r}: steps_to needs a threshold, steps_to(<key>, 0.9); auc takes none")
    return summary, key, None if threshold is None else float(threshold)


def describe_score(score: str, last: int) -> str:
    """One line saying what a score measures, for reports."""
    summary, key, threshold = parse_score(score)
    return {
        "eval": f"{key} of the final policy on the task's held-out examples",
        "last": f"{key}, the mean of the last {last} steps",
        "auc": f"{key}, the mean over all steps (the area under its curve over the number of steps)",
        "steps_to": f"the first step at which {key}, averaged over the last {last} steps, reaches {threshold} "
        "(lower is better; a run that never does counts as its last step + 1)",
    }[summary]


def score_run(
    run_dir: str | Path, metric: str, last: int = 20, evaluate: Callable[[Path], dict[str, Any]] | None = None
) -> float:
    """The score of one finished run.

    Args:
        run_dir: The run folder.
        metric: What to score (see :func:`describe_score`):

            - ``eval/<key>``: read from ``eval.json``, which ``evaluate`` writes when it is missing
              or did not score the run's latest checkpoint under its current config
              (:func:`rlsdk.trainer.current_eval`);
            - ``<key>``: the mean of the key of ``metrics.jsonl`` over the last ``last`` steps;
            - ``auc(<key>)``: its mean over all steps (the area under its curve over the number of steps);
            - ``steps_to(<key>, <threshold>)``: the first step at which its mean over the last ``last``
              steps reaches the threshold; a run that never reaches it scores its last step + 1, a
              lower bound.
        last: The averaging window for a training metric.
        evaluate: Scores the run's latest checkpoint (e.g. :func:`rlsdk.trainer.evaluate_checkpoint`).

    Raises:
        ConfigError: The metric is not recorded (the message lists the keys that are), or a bad score.
    """
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    if not rows:
        raise ConfigError(f"run {str(run_dir)!r} has no metrics.jsonl rows; it has not trained")
    summary, key, threshold = parse_score(metric)
    if summary == "eval":
        from rlsdk.trainer import current_eval

        eval_path = run_dir / "eval.json"
        result = current_eval(run_dir)
        if result is None and evaluate is not None:
            result = evaluate(run_dir)
        if result is None:
            what = "an eval.json of another checkpoint or config" if eval_path.exists() else "no eval.json"
            raise ConfigError(
                f"run {str(run_dir)!r} has {what}; run `rlsdk eval {run_dir}` or score by a training metric"
            )
        if key not in result:
            keys = sorted(k for k in result if k.startswith("eval/"))
            raise ConfigError(f"score {key!r} is not in {str(eval_path)!r}; it holds {', '.join(keys)}")
        return float(result[key])
    points = [(int(r["step"]), float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]
    if not points:
        keys = sorted({k for r in rows for k in r} - {"step", "wall_time"})
        raise ConfigError(f"score {key!r} is not in {str(run_dir / 'metrics.jsonl')!r}; its keys: {', '.join(keys)}")
    values = [v for _, v in points]
    if summary == "auc":
        return sum(values) / len(values)
    if summary == "last":
        tail = values[-last:]
        return sum(tail) / len(tail)
    assert threshold is not None  # the spec checks that a steps-to-threshold score has one
    for i, (step, _) in enumerate(points):
        window = values[max(0, i + 1 - last) : i + 1]
        if sum(window) / len(window) >= threshold:
            return float(step)
    return float(points[-1][0] + 1)


def _check_same(exp_dir: Path, spec: ExperimentSpec) -> list[int]:
    """The seeds already in ``exp_dir``'s spec; refuse a spec that asks another question."""
    path = exp_dir / "experiment.yaml"
    if not path.exists():
        return []
    old = yaml.safe_load(path.read_text()) or {}
    new = spec.to_dict()
    differ = [k for k in new if k != "seeds" and old.get(k) != new[k]]
    if differ:
        raise ConfigError(
            f"experiment folder {str(exp_dir)!r} holds runs of another spec ({', '.join(differ)} differ); "
            "choose another output folder, or change only seeds to add runs"
        )
    return list(old.get("seeds") or [])


def run_experiment(
    spec: ExperimentSpec,
    registry: Any,
    exp_dir: str | Path,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, Any]:
    """Train every arm, task and seed of ``spec`` that is not finished yet, and score each run.

    Args:
        spec: The experiment.
        registry: The components (:func:`rlsdk.get_registry`).
        exp_dir: The experiment folder (created, or continued).
        log: Receives the lines to show: how many finished runs are reused, then one line per run
            trained, with its score, its time and the time left (the mean time per step of the runs
            trained so far times the steps left; see :class:`rlsdk.progress.RunsProgress`).
        progress: Show progress within runs: on a terminal two rows redrawn in place (all runs,
            and the current run's step, reward, loss and s/step), else a line through ``log`` at
            most once a minute. False: only the lines above.

    Returns:
        The content of ``scores.json``: ``{"score", "last", "scores": {arm: {task: {seed: value}}},
        "seconds": {...}}`` with seeds as strings (JSON keys).

    Raises:
        FolderLocked: Another process is running an experiment in ``exp_dir``.
        Interrupted: SIGINT or SIGTERM stopped the current run after its checkpoint; running the
            experiment again continues it.
    """
    from rlsdk.config import load_config

    exp_dir = Path(exp_dir)
    earlier = _check_same(exp_dir, spec)  # seeds may only grow: keep the runs already there
    spec = replace(spec, seeds=[*spec.seeds, *(s for s in earlier if s not in spec.seeds)])
    configs = {
        (arm, task, seed): load_config(registry, spec.config, spec.run_overrides(arm, task, seed))
        for arm in spec.arms
        for task in spec.tasks
        for seed in spec.seeds
    }  # every config is checked before the first run starts
    with FolderLock(exp_dir, "experiment folder"):
        return _run(spec, registry, exp_dir, configs, log, progress)


def _run(
    spec: ExperimentSpec,
    registry: Any,
    exp_dir: Path,
    configs: dict[tuple[str, str, int], dict[str, Any]],
    log: Callable[[str], None],
    progress: bool,
) -> dict[str, Any]:
    """:func:`run_experiment` once the folder is locked."""
    from rlsdk.progress import RunsProgress
    from rlsdk.trainer import evaluate_checkpoint, train

    atomic_write_text(exp_dir / "experiment.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))
    result = _read_scores(exp_dir)
    result.update(score=spec.score, last=spec.last)
    finished = {key for key in configs if (run_path(exp_dir, *key) / "summary.json").exists()}
    pending = {
        key: _steps_left(run_path(exp_dir, *key), config) for key, config in configs.items() if key not in finished
    }
    if finished:
        rest = f"{len(pending)} to train" if pending else "nothing to train"
        log(f"reused {len(finished)} finished run{'s' * (len(finished) != 1)} from {exp_dir / 'runs'}; {rest}")
    display = RunsProgress(len(pending), sum(steps for steps, _ in pending.values()), log=log, progress=progress)
    try:
        for i, ((arm, task, seed), config) in enumerate(configs.items(), 1):
            run_dir = run_path(exp_dir, arm, task, seed)
            label = f"[{i}/{len(configs)}] {arm} / {task} / seed {seed}"
            if (arm, task, seed) in pending:
                steps, done = pending[arm, task, seed]
                display.start_run(label, steps + done, done)
                start = time.perf_counter()
                train(
                    config,
                    registry,
                    run_dir=run_dir,
                    resume=(run_dir / "config.yaml").exists(),
                    progress=False,
                    on_step=display.on_step,
                )
                result["seconds"].setdefault(arm, {}).setdefault(task, {})[str(seed)] = round(
                    time.perf_counter() - start, 3
                )
            value = score_run(run_dir, spec.score, spec.last, evaluate=lambda d: evaluate_checkpoint(d, registry))
            result["scores"].setdefault(arm, {}).setdefault(task, {})[str(seed)] = value
            atomic_write_text(exp_dir / "scores.json", json.dumps(result, indent=2) + "\n")
            if (arm, task, seed) in pending:
                log(f"{label}: {spec.score} = {value:.4f}  ({display.end_run()})")
    finally:
        display.close()
    return result


def _steps_left(run_dir: Path, config: dict[str, Any]) -> tuple[int, int]:
    """``(steps to train, steps done)`` of an unfinished run: an interrupted run continues from the
    last step of its metrics (its checkpoint may be a little earlier; this is for estimates)."""
    total = int(config["train"]["steps"])
    rows = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "config.yaml").exists() else []
    done = min(int(rows[-1]["step"]), total) if rows else 0
    return total - done, done


def _read_scores(exp_dir: Path) -> dict[str, Any]:
    path = exp_dir / "scores.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    return {"scores": data.get("scores", {}), "seconds": data.get("seconds", {})}


def load_scores(
    exp_dir: str | Path,
    score: str | None = None,
    last: int | None = None,
    evaluate: Callable[[Path], dict[str, Any]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, list[int]], ExperimentSpec]:
    """Each arm's ``(runs, tasks)`` scores from an experiment folder.

    Args:
        exp_dir: The experiment folder.
        score: Rescore every run by this metric instead of the spec's (see :func:`score_run`).
        last: With ``score``: the number of last steps averaged (default: the spec's).
        evaluate: Passed to :func:`score_run` (evaluates runs that have no ``eval.json`` yet).

    Returns:
        ``(scores, seeds, spec)``: arm -> array of shape ``(runs, tasks)`` (tasks in the spec's
        order), arm -> the seeds of its rows (the seeds finished on every task), and the spec.

    Raises:
        ConfigError: The folder holds no experiment, or an arm has no seed finished on every task.
    """
    exp_dir = Path(exp_dir)
    path = exp_dir / "experiment.yaml"
    if not path.is_file():
        raise ConfigError(
            f"{str(exp_dir)!r} is not an experiment folder (no experiment.yaml); run `rlsdk experiment` first"
        )
    spec = ExperimentSpec(**yaml.safe_load(path.read_text()))
    metric, k = score or spec.score, last or spec.last
    stored = _read_scores(exp_dir)["scores"]
    scores, seeds = {}, {}
    for arm in spec.arms:
        rows, done = [], []
        for seed in spec.seeds:
            row = []
            for task in spec.tasks:
                run_dir = run_path(exp_dir, arm, task, seed)
                if not (run_dir / "summary.json").exists():
                    break
                if score is None and str(seed) in stored.get(arm, {}).get(task, {}):
                    row.append(float(stored[arm][task][str(seed)]))
                else:
                    row.append(score_run(run_dir, metric, k, evaluate))
            if len(row) == len(spec.tasks):
                rows.append(row)
                done.append(seed)
        if not rows:
            raise ConfigError(
                f"arm {arm!r} of {str(exp_dir)!r} has no seed finished on every task; "
                "run `rlsdk experiment` to finish it"
            )
        scores[arm], seeds[arm] = np.asarray(rows, dtype=np.float64), done
    return scores, seeds, spec
