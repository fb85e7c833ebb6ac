"""Hyperparameter search with Optuna: each trial trains a configuration over a few seeds.

A sweep is described by a YAML file::

    name: lr-entropy
    trials: 20                       # finished trials wanted
    seeds: 2                         # every trial runs these seeds; its value is the mean score
    config: base.yaml                # optional training config, relative to this file
    overrides: [train.steps=100]
    space:                           # dotted config key -> its range
      train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # a float range (log scale)
      loss.entropy_coef: {low: 0.0, high: 0.05}          # a float range
      sampler.n: {low: 4, high: 16, step: 4}             # an int range: low, high and step are integers
      algorithm: [grpo, dr_grpo]                         # a choice
    score: eval/reward               # as in an experiment: eval/<key>, or a training metric ...
    last: 20                         # ... averaged over the last 20 steps
    direction: maximize              # or minimize
    sampler: tpe                     # tpe (default), random, gp, cmaes
    sampler_seed: 0

The study lives in ``SWEEP_DIR/study.journal`` (Optuna's ``JournalStorage`` with a file backend, safe
for several processes on one host), and trial ``n`` trains into ``SWEEP_DIR/trials/<n>/seed_<k>/``.
Running the sweep again continues it: it runs trials until ``trials`` have finished. A trial that
was running in a process that no longer exists (a crash, a killed job) is marked failed and its
parameters are queued again, so no point of the search is lost; its runs start afresh. A continued
sweep reseeds its sampler from ``(sampler_seed, trials so far)``, so it does not propose the same
points again, but other points than an uninterrupted sweep would (each trial's runs are still
reproducible from their folders).

Optuna 5 defaults worth knowing (its changelog): TPE is multivariate with ``constant_liar=True``, and
``optuna.importance.get_param_importances`` uses PED-ANOVA. ``sweep.json`` reports those importances.

The best trial's value is optimistic: it is the best of many noisy estimates (the winner's curse).
Confirm it against the baseline on fresh seeds with ``rlsdk experiment`` before reporting it;
``rlsdk sweep`` prints the experiment arm to use.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rlsdk.errors import ConfigError
from rlsdk.provenance.rundir import atomic_write_text
from rlsdk.research.experiment import _read_spec, _seeds, score_run

__all__ = ["Param", "SweepSpec", "load_sweep", "run_sweep", "SAMPLERS"]

#: The samplers ``sampler:`` may name (Optuna classes; ``gp`` needs scipy and torch, ``cmaes`` the cmaes package).
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "gp": "GPSampler", "cmaes": "CmaEsSampler"}
_KEYS = (
    "name",
    "trials",
    "seeds",
    "config",
    "overrides",
    "space",
    "score",
    "last",
    "direction",
    "sampler",
    "sampler_seed",
)


@dataclass
class Param:
    """One dimension of the search space: ``kind`` is ``float``, ``int`` or ``choice``."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list[Any] | None = None

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for a value."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def corners(self) -> list[Any]:
        """The values checked before the search starts: both ends, or every choice."""
        return list(self.choices or ()) if self.kind == "choice" else [self.low, self.high]


@dataclass
class SweepSpec:
    """A resolved sweep file (see the module docstring)."""

    name: str
    trials: int
    seeds: list[int]
    space: list[Param]
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    score: str = "eval/reward"
    last: int = 20
    direction: str = "maximize"
    sampler: str = "tpe"
    sampler_seed: int = 0

    def trial_overrides(self, params: dict[str, Any], seed: int) -> list[str]:
        """The overrides of one run of a trial."""
        return [*self.overrides, *_as_overrides(params), f"seed={seed}"]

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (what ``sweep.yaml`` in the sweep folder holds)."""
        return asdict(self)


def _as_overrides(params: dict[str, Any]) -> list[str]:
    """``key=value`` strings that parse back to the same values (a string is quoted only where needed)."""
    from rlsdk.config import parse_overrides

    out = []
    for key, value in params.items():
        quoted, plain = f"{key}={json.dumps(value, ensure_ascii=False)}", f"{key}={value}"
        try:
            keep_plain = isinstance(value, str) and parse_overrides([plain]) == parse_overrides([quoted])
        except ConfigError:  # e.g. a string YAML reads as a flow mapping
            keep_plain = False
        out.append(plain if keep_plain else quoted)
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _param(key: str, value: Any, where: str) -> Param:
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: space.{key} lists no choices")
        return Param(key, "choice", choices=value)
    if (
        not isinstance(value, dict)
        or not {"low", "high"} <= set(value)
        or not set(value) <= {"low", "high", "log", "step"}
    ):
        raise ConfigError(
            f"{where}: space.{key} must be a list of choices or a range {{low, high[, log][, step]}}, got {value!r}"
        )
    low, high, log, step = value["low"], value["high"], bool(value.get("log", False)), value.get("step")
    if not (_number(low) and _number(high)) or low >= high:
        raise ConfigError(f"{where}: space.{key} needs numbers low < high, got low={low!r} high={high!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: space.{key} has log: true, so low must be > 0, got {low!r}")
    if step is not None and (not _number(step) or step <= 0 or log):
        raise ConfigError(f"{where}: space.{key}.step must be a positive number and cannot go with log, got {step!r}")
    kind = "int" if all(isinstance(v, int) for v in (low, high, step if step is not None else 1)) else "float"
    return Param(key, kind, low, high, log, step)


def load_sweep(path: str | Path, overrides: list[str] | None = None, trials: int | None = None) -> SweepSpec:
    """Read and check a sweep file.

    Args:
        path: The YAML file.
        overrides: ``key=value`` overrides appended to the file's (from the command line).
        trials: Replaces the file's ``trials``.

    Raises:
        ConfigError: The file is missing or malformed; the message names the key and what is valid.
    """
    data, where, common = _read_spec(Path(path), "sweep", _KEYS, overrides)
    space = data.get("space")
    if not isinstance(space, dict) or not space:
        raise ConfigError(
            f"{where} needs a 'space' mapping config keys to ranges, "
            "e.g. space: {train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}}"
        )
    trials = data.get("trials", 20) if trials is None else trials
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ConfigError(f"{where}: trials must be an integer >= 1, got {trials!r}")
    direction, sampler = data.get("direction", "maximize"), data.get("sampler", "tpe")
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"{where}: direction must be maximize or minimize, got {direction!r}")
    if sampler not in SAMPLERS:
        raise ConfigError(f"{where}: sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    sampler_seed = data.get("sampler_seed", 0)
    if not isinstance(sampler_seed, int) or isinstance(sampler_seed, bool) or sampler_seed < 0:
        raise ConfigError(f"{where}: sampler_seed must be a non-negative integer, got {sampler_seed!r}")
    return SweepSpec(
        trials=trials,
        seeds=_seeds(data.get("seeds", 1), f"{where}: seeds"),
        space=[_param(str(k), v, where) for k, v in space.items()],
        direction=direction,
        sampler=sampler,
        sampler_seed=sampler_seed,
        **common,
    )


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            "rlsdk sweep needs Optuna: pip install 'optuna>=5,<6' (or the extra: pip install 'rlsdk[sweep]')"
        ) from None
    return optuna


def _alive(attrs: dict[str, Any]) -> bool:
    """Whether the process running a trial may still exist: trials of other hosts are left alone."""
    if "host" not in attrs or "pid" not in attrs:
        return False  # crashed between asking for the trial and recording its process
    if attrs["host"] != socket.gethostname():
        return True
    try:
        os.kill(int(attrs["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _summary(study: Any, spec: SweepSpec) -> dict[str, Any]:
    optuna = _optuna()
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    rows = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "scores": t.user_attrs.get("scores"),
        }
        for t in study.trials
    ]
    out: dict[str, Any] = {
        "name": spec.name,
        "direction": spec.direction,
        "score": spec.score,
        "finished": len(done),
        "trials": rows,
    }
    if done:
        best = study.best_trial
        out["best"] = {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "overrides": _as_overrides(best.params),
        }
    varied = {k for t in done for k in t.params}
    if len(done) >= 2 and len(varied) >= 2:
        with warnings.catch_warnings(record=True) as caught:  # e.g. too few trials to tell the parameters apart
            warnings.simplefilter("always")
            out["importances"] = dict(optuna.importance.get_param_importances(study))
        out["importance_method"] = "PED-ANOVA (Optuna 5 default)"
        out["importance_warnings"] = sorted({str(w.message) for w in caught})
    return out


def run_sweep(
    spec: SweepSpec, registry: Any, sweep_dir: str | Path, log: Callable[[str], None] = print, progress: bool = True
) -> dict[str, Any]:
    """Run trials until ``spec.trials`` have finished; write and return ``sweep.json``'s content.

    Args:
        spec: The sweep.
        registry: The components (:func:`rlsdk.get_registry`).
        sweep_dir: The sweep folder (created, or continued).
        log: Receives one line per trial, with its time and the time left (the mean time per step
            of the runs trained so far times the steps of the trials still to run).
        progress: Show progress within runs, as :func:`rlsdk.research.experiment.run_experiment` does.

    Returns:
        ``{"name", "direction", "score", "finished", "trials": [...], "best": {...}, "importances": {...}}``
        (``best`` once a trial has finished; ``importances`` once two have, varying two parameters).

    Raises:
        ConfigError: A bad range (checked at both ends before the first trial), a changed spec in
            an existing folder, or a missing Optuna.
    """
    from rlsdk.config import load_config
    from rlsdk.progress import RunsProgress, format_seconds
    from rlsdk.trainer import evaluate_checkpoint, train

    optuna = _optuna()
    sweep_dir = Path(sweep_dir)
    saved = sweep_dir / "sweep.yaml"
    if saved.exists():
        old = yaml.safe_load(saved.read_text()) or {}
        differ = [k for k, v in spec.to_dict().items() if k != "trials" and old.get(k) != v]
        if differ:
            raise ConfigError(
                f"sweep folder {str(sweep_dir)!r} holds a study of another spec ({', '.join(differ)} differ); "
                "choose another output folder, or change only trials"
            )
    for param in spec.space:  # a typo in a key or an invalid end of a range fails now, not at trial 7
        for value in param.corners():
            load_config(registry, spec.config, spec.trial_overrides({param.key: value}, spec.seeds[0]))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, yaml.safe_dump(spec.to_dict(), sort_keys=False))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep_dir / "study.journal"))
    )
    sampler_class = getattr(optuna.samplers, SAMPLERS[spec.sampler])
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=sampler_class(seed=spec.sampler_seed),
        direction=spec.direction,
        load_if_exists=True,
    )
    if study.trials:  # continuing: a sampler seeded as at the start would propose the same points again
        study.sampler = sampler_class(
            seed=int(np.random.SeedSequence([spec.sampler_seed, len(study.trials)]).generate_state(1)[0])
        )
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if not _alive(stale.user_attrs):
            study.tell(stale.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(stale.params)
            log(f"trial {stale.number}: its process is gone; marked failed, its parameters queued again")

    def finished() -> int:
        return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))

    def runs_left(seeds_done: int = 0) -> int:
        return max(spec.trials - finished(), 0) * len(spec.seeds) - seeds_done

    steps = int(load_config(registry, spec.config, spec.trial_overrides({}, spec.seeds[0]))["train"]["steps"])
    display = RunsProgress(runs_left(), runs_left() * steps, log=log, progress=progress)
    try:
        while finished() < spec.trials:
            trial = study.ask()
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
            params = {p.key: p.suggest(trial) for p in spec.space}
            scores, start = [], time.perf_counter()
            try:
                for j, seed in enumerate(spec.seeds):
                    run_dir = sweep_dir / "trials" / f"{trial.number:04d}" / f"seed_{seed}"
                    config = load_config(registry, spec.config, spec.trial_overrides(params, seed))
                    steps = int(config["train"]["steps"])  # the trials still to run are guessed to be this long
                    display.set_plan(runs_left(j), runs_left(j) * steps)
                    display.start_run(f"trial {trial.number} / seed {seed}", steps)
                    train(config, registry, run_dir=run_dir, progress=False, on_step=display.on_step)
                    scores.append(
                        score_run(run_dir, spec.score, spec.last, evaluate=lambda d: evaluate_checkpoint(d, registry))
                    )
                    display.end_run()
            except BaseException as exc:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                if isinstance(exc, KeyboardInterrupt):  # Ctrl-C or SIGTERM: the next run of the sweep retries it
                    study.enqueue_trial(params)
                raise
            trial.set_user_attr("scores", scores)
            value = sum(scores) / len(scores)
            study.tell(trial, value)
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
            display.set_plan(runs_left(), runs_left() * steps)
            note = format_seconds(time.perf_counter() - start)
            left = display.left() if runs_left() else None
            note += f"; about {format_seconds(left)} left" if left is not None else ""
            log(f"trial {trial.number} ({finished()}/{spec.trials}): {spec.score} = {value:.4f}  {shown}  ({note})")
    finally:
        display.close()
    summary = _summary(study, spec)
    atomic_write_text(sweep_dir / "sweep.json", json.dumps(summary, indent=2) + "\n")
    return summary
