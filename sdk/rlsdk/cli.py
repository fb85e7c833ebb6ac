"""The ``rlsdk`` command line.

``rlsdk train [CONFIG.yaml] [key=value ...] [--resume RUN_DIR]``
    Train (default: GRPO on the ``reverse`` task, on the CPU).
``rlsdk eval RUN_DIR [key=value ...]``
    Score the run's latest checkpoint on the task's held-out examples.
``rlsdk plugins [--json]``
    List installed plugins and what they register.
``rlsdk env [RUN_DIR] [--check LOCK|RUN_DIR]``
    Print the installed packages (or a run's) as a lock file, or check them against one.
``rlsdk new-plugin [NAME] [--component KIND ...] [--output-dir DIR] [--no-input]``
    Create a plugin package from the cookiecutter template.
``rlsdk experiment EXPERIMENT.yaml [key=value ...] [--out DIR] [--seeds N|LIST]``
    Train every arm of an experiment over several seeds, then compare the arms.
``rlsdk ablate ABLATION.yaml [key=value ...] [--out DIR] [--seeds N|LIST]``
    The same for a method and its ablations, compared seed by seed with the full method.
``rlsdk compare EXP_DIR [--baseline ARM] [--metric iqm] [--score METRIC]``
    Intervals, tests and the detectable effect for an experiment's arms.
``rlsdk sweep SWEEP.yaml [key=value ...] [--out DIR] [--trials N]``
    Hyperparameter search with Optuna, each trial over a few seeds.
``rlsdk report RUN_DIR|EXP_DIR [--smooth K]``
    Plot the training dynamics of a run, or of an experiment's arms over seeds.
``rlsdk reproduce RUN_DIR [--out DIR] [--steps K] [--atol A]``
    Train a run again and compare its metrics and environment with the original's.

Every command that builds components accepts ``--plugin FILE.py`` (repeatable) to load a plugin from a
file (``env`` and ``report`` do not), and every command ``--debug`` (or ``RLSDK_DEBUG=1``) to show
the traceback of an error instead of its one-line message.

Exit status: 0 on success, 1 when a check fails (``reproduce``, ``env --check``) or on an unexpected
error (a bug), 2 for a bad input or a component that broke its contract, 128 + the signal's number
when SIGINT (130) or SIGTERM (143) stopped training after writing a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from pathlib import Path

from rlsdk.errors import ConfigError, Interrupted, RlsdkError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rlsdk`` (also used to generate the CLI reference)."""
    parser = argparse.ArgumentParser(prog="rlsdk", description="Plugin-based RL post-training for language models.")
    debug_help = "show the traceback of an error (also RLSDK_DEBUG=1)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True)

    def plugin_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--plugin", action="append", default=[], metavar="FILE",
            help="load a plugin from a .py file (repeatable; it runs the file's code, see the security page)",
        )  # fmt: skip

    train = sub.add_parser(
        "train",
        help="train a policy",
        description="Train a policy. Arguments ending in .yaml/.yml are a config file; "
        "key=value pairs override settings.",
    )
    train.add_argument(
        "args",
        nargs="*",
        metavar="[CONFIG.yaml] [key=value]",
        help="config file and dotted overrides, e.g. train.steps=50 loss.name=reinforce",
    )
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    train.add_argument(
        "--run-dir", metavar="DIR", help="where to write the run (default: runs/<algorithm>-<task>-<time>)"
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config, each value with where it came from "
        "(default, algorithm preset, file, command line), and exit",
    )
    plugin_flag(train)

    ev = sub.add_parser(
        "eval",
        help="evaluate a run's checkpoint on held-out prompts",
        description="Score a checkpoint on the task's held-out prompts; writes RUN_DIR/eval.json.",
    )
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("overrides", nargs="*", metavar="key=value", help="overrides, e.g. eval.size=50 task.max_digits=5")
    ev.add_argument("--checkpoint", metavar="FILE", help="checkpoint to load (default: the latest)")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    plugin_flag(ev)

    pl = sub.add_parser(
        "plugins",
        help="list installed plugins",
        description="List installed plugins, their distribution, version and what they register.",
    )
    pl.add_argument("--json", action="store_true", help="print JSON")
    plugin_flag(pl)

    en = sub.add_parser(
        "env",
        help="print this environment's packages as a lock, or check them against one",
        description="Print the installed packages as a lock file (pip constraints, one name==version a line; "
        "install it with `pip install -c FILE ...`), or with RUN_DIR the packages that run was trained with. "
        "--check compares this environment with a lock file or a run folder and exits with status 1 when a "
        "version differs or a package is missing.",
    )
    en.add_argument(
        "source", nargs="?", metavar="RUN_DIR", help="print the packages recorded in this run's manifest.json"
    )
    en.add_argument(
        "--check", metavar="LOCK|RUN_DIR", help="compare the installed packages with a lock file or a run's"
    )
    en.add_argument(
        "--all", action="store_true", help="with --check, also list installed packages the lock does not name"
    )
    en.add_argument("--json", action="store_true", help="print JSON")

    from rlsdk.scaffold import COMPONENT_KINDS

    np_ = sub.add_parser(
        "new-plugin",
        help="create a plugin package from the template",
        description="Create a plugin package from rlsdk's cookiecutter template: an installable package with a worked "
        "example of each chosen component kind, its tests, a README, a CI workflow and configs/train.yaml. Without "
        "--no-input, cookiecutter asks for each answer (the options given are the defaults it offers).",
    )
    np_.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="distribution name of the plugin, e.g. rlsdk-my-loss (required with --no-input)",
    )
    np_.add_argument(
        "--component",
        action="append",
        choices=[*COMPONENT_KINDS, "all"],
        metavar="KIND",
        help=f"component kind to include an example of (repeatable): {', '.join(COMPONENT_KINDS)} "
        "or all (default: loss)",
    )
    np_.add_argument(
        "--output-dir",
        default=".",
        metavar="DIR",
        help="where to create the package folder (default: the current directory)",
    )
    np_.add_argument("--author", metavar="A", help="author for pyproject.toml and the README")
    np_.add_argument("--description", metavar="D", help="one-line description")
    np_.add_argument("--github-username", metavar="U", help="GitHub user or organisation for the project URLs")
    np_.add_argument("--no-input", action="store_true", help="do not prompt; take the answers from the options")
    np_.add_argument(
        "--template",
        metavar="DIR",
        help="template folder (default: $RLSDK_PLUGIN_TEMPLATE, else the repository's cookiecutter-plugin/)",
    )
    plugin_flag(np_)
    for name, help_, description in (
        (
            "experiment",
            "train every arm of an experiment over several seeds and compare them",
            "Run an experiment file: every arm, task and seed trained into EXP_DIR/runs/, each run scored, "
            "then the arms compared with the baseline (the first arm) and plotted. "
            "Running it again continues where it stopped.",
        ),
        (
            "ablate",
            "train a method and its ablations over the same seeds and compare them pairwise",
            "Run an ablation file (the full method and one change per ablation): like `rlsdk experiment`, with each "
            "ablation compared with the full method seed by seed (paired t-tests, Holm-corrected).",
        ),
    ):
        ex = sub.add_parser(name, help=help_, description=description)
        ex.add_argument("spec", metavar="ABLATION.yaml" if name == "ablate" else "EXPERIMENT.yaml")
        ex.add_argument(
            "overrides", nargs="*", metavar="key=value", help="overrides for every run, e.g. train.steps=100"
        )
        ex.add_argument("--out", metavar="DIR", help="the experiment folder (default: experiments/<name>)")
        ex.add_argument("--seeds", metavar="N|LIST", help="replace the file's seeds: a count (5) or a list (0,1,2)")
        ex.add_argument(
            "--no-progress", action="store_true", help="hide the progress within runs (a line per finished run stays)"
        )
        _compare_flags(ex)
        plugin_flag(ex)

    sw = sub.add_parser(
        "sweep",
        help="search hyperparameters with Optuna, each trial over a few seeds",
        description="Run a sweep file: Optuna proposes a configuration per trial, each trains over the file's seeds "
        "into SWEEP_DIR/trials/<n>/, and its value is the mean score. Running it again continues the study. Writes "
        "SWEEP_DIR/sweep.json (every trial, the best one, parameter importances). "
        "Needs optuna (pip install 'rlsdk[sweep]').",
    )
    sw.add_argument("spec", metavar="SWEEP.yaml")
    sw.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for every run, e.g. train.steps=100")
    sw.add_argument("--out", metavar="DIR", help="the sweep folder (default: sweeps/<name>)")
    sw.add_argument(
        "--trials", type=int, metavar="N", help="replace the file's number of trials (finished trials wanted)"
    )
    sw.add_argument(
        "--no-progress", action="store_true", help="hide the progress within runs (a line per finished trial stays)"
    )
    plugin_flag(sw)

    rt = sub.add_parser(
        "report",
        help="plot the training dynamics of a run or an experiment",
        description="Plot a run folder (RUN_DIR/dynamics.png: reward, eval reward, KL, entropy, loss, clip fraction, "
        "grad norm, response length, learning rate) or an experiment folder (curves.png: per arm the median over "
        "seeds with a 10-90% band; comparison.png when the experiment has been compared).",
    )
    rt.add_argument("path", metavar="RUN_DIR|EXP_DIR")
    rt.add_argument(
        "--smooth", type=int, default=1, metavar="K", help="trailing moving average over K steps (default: 1, none)"
    )

    rp = sub.add_parser(
        "reproduce",
        help="train a run again and check that its metrics repeat",
        description="Train RUN_DIR's config again into a new folder, compare every metric step by step "
        "(exactly, unless --atol/--rtol) and the manifests (versions, git, plugins, hardware, threads), "
        "and write NEW_DIR/reproduce.json. Exit status 1 when the metrics differ.",
    )
    rp.add_argument("run_dir", metavar="RUN_DIR")
    rp.add_argument("--out", metavar="DIR", help="the new run folder (default: RUN_DIR-reproduce, -reproduce-2, ...)")
    rp.add_argument(
        "--steps", type=int, metavar="K", help="repeat only the first K steps (the schedule is the full run's)"
    )
    rp.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default: 0, bit for bit)")
    rp.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default: 0)")
    rp.add_argument("--json", action="store_true", help="print the report as JSON")
    plugin_flag(rp)

    cp = sub.add_parser(
        "compare",
        help="compare an experiment's arms: intervals, tests, detectable effect",
        description="Compare the arms of an experiment folder with a baseline: the aggregate metric with a bootstrap "
        "interval, the difference and P(arm > baseline) with intervals, Holm-corrected Welch tests and the minimum "
        "detectable effect. Writes EXP_DIR/comparison.md and comparison.json.",
    )
    cp.add_argument("exp_dir", metavar="EXP_DIR")
    cp.add_argument("--baseline", metavar="ARM", help="the arm compared against (default: the first)")
    cp.add_argument(
        "--score", metavar="SCORE",
        help="rescore every run: eval/<key>, <key> (a metrics.jsonl key, mean of the last steps), auc(<key>) "
        "or steps_to(<key>, <threshold>)",
    )  # fmt: skip
    cp.add_argument(
        "--last", type=int, metavar="K", help="with --score, a training metric is averaged over the last K steps"
    )
    cp.add_argument("--json", action="store_true", help="print the comparison as JSON")
    _compare_flags(cp)
    plugin_flag(cp)
    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


def _compare_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metric",
        default="iqm",
        choices=["iqm", "mean", "median", "optimality_gap"],
        help="aggregate over runs and tasks (default: iqm)",
    )
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals (default: 0.95)")
    p.add_argument(
        "--reps", type=int, default=50_000, help="bootstrap resamples for each arm's interval (default: 50000)"
    )
    p.add_argument("--alpha", type=float, default=0.05, help="level of the tests (default: 0.05)")
    p.add_argument("--stats-seed", type=int, default=0, metavar="S", help="seed of the bootstrap (default: 0)")
    p.add_argument(
        "--paired", action=argparse.BooleanOptionalAction, default=None,
        help="pair runs by seed: paired t-tests (default: the spec's `paired`, true for an ablation)",
    )  # fmt: skip


def _registry(plugin_files: list[str]):
    from rlsdk.plugins import get_registry

    return get_registry(extra=plugin_files) if plugin_files else get_registry()


def _split_args(args: list[str]) -> tuple[str | None, list[str]]:
    config, overrides = None, []
    for arg in args:
        if "=" in arg:
            overrides.append(arg)
        elif config is None and arg.endswith((".yaml", ".yml")):
            config = arg
        else:
            raise ConfigError(f"unexpected argument {arg!r}: expected a .yaml config file or key=value overrides")
    return config, overrides


def cmd_train(ns: argparse.Namespace) -> int:
    from rlsdk.config import dump_yaml, load_yaml, resolve_config
    from rlsdk.trainer import train

    registry = _registry(ns.plugin)
    path, overrides = _split_args(ns.args)
    if ns.resume:
        if path:
            raise ConfigError("--resume takes the run's own config.yaml; give only key=value overrides")
        run_dir: Path | None = Path(ns.resume)
        if not (Path(ns.resume) / "config.yaml").is_file():
            raise ConfigError(f"--resume {ns.resume!r}: not a run folder (it has no config.yaml)")
        base = load_yaml(Path(ns.resume) / "config.yaml")
        config, sources = resolve_config(registry, overrides=overrides, base=base)
    else:
        run_dir = Path(ns.run_dir) if ns.run_dir else None
        config, sources = resolve_config(registry, path, overrides)
    if ns.print_config:
        print(dump_yaml(config, sources), end="")
        return 0
    summary = train(
        config, registry, run_dir=run_dir, resume=bool(ns.resume), progress=False if ns.no_progress else None
    )
    print(
        f"run: {summary['run_dir']}\n"
        f"steps: {summary['steps']}  reward first {summary['reward_first']:.3f}  "
        f"last-10 mean {summary['reward_last10']:.3f}  max {summary['reward_max']:.3f}"
    )
    return 0


def cmd_eval(ns: argparse.Namespace) -> int:
    from rlsdk.trainer import evaluate_checkpoint

    result = evaluate_checkpoint(ns.run_dir, _registry(ns.plugin), ns.overrides, ns.checkpoint)
    if ns.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>24}  {value}")
    return 0


def cmd_plugins(ns: argparse.Namespace) -> int:
    registry = _registry(ns.plugin)
    rows = [p.to_dict() for p in registry.plugins]
    if ns.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="rlsdk plugins")
    for col in ("plugin", "distribution", "version", "registers"):
        table.add_column(col)
    for row in rows:
        registers = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in row["registers"].items())
        if row["error"]:
            registers = f"[red]FAILED: {row['error']}[/red]"
        table.add_row(row["name"], row["distribution"] or "-", row["version"] or "-", registers or "-")
    Console(width=160).print(table)
    return 0


def cmd_env(ns: argparse.Namespace) -> int:
    """``rlsdk env``: the installed packages as a lock, a run's, or the differences from one."""
    import datetime
    import platform

    from rlsdk.provenance.packages import differences, installed_packages, lock_text, read_lock

    if ns.check and ns.source:
        raise ConfigError("give either RUN_DIR (print its packages) or --check LOCK|RUN_DIR, not both")
    if ns.all and not ns.check:
        raise ConfigError("--all only applies with --check")
    installed = installed_packages()
    if ns.check:
        diffs = differences(read_lock(ns.check), installed, extras=ns.all)
        if ns.json:
            print(json.dumps([d.__dict__ for d in diffs], indent=2))
        else:
            print(
                f"{len(diffs)} package(s) differ from {ns.check}:"
                if diffs
                else f"every package of {ns.check} is installed at its version"
            )
            print("".join(f"  {d}\n" for d in diffs), end="")
        differ = any(d.wanted is not None for d in diffs)
        if differ and not ns.json:
            lock = "lock.txt" if Path(ns.check).is_dir() else ns.check
            first = f"rlsdk env {shlex.quote(ns.check)} > lock.txt, then " if lock != ns.check else ""
            print(f"to install those versions: {first}pip install -c {shlex.quote(lock)} followed by what you install")
        return 1 if differ else 0
    if ns.source:
        packages, header = read_lock(ns.source), f"the packages of the run {ns.source} (rlsdk env {ns.source})"
    else:
        header = (
            f"the packages of Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
            f"{datetime.date.today().isoformat()} (rlsdk env)"
        )
        packages = installed
    if ns.json:
        print(json.dumps(packages, indent=2))
    else:
        print(
            lock_text(packages, header + "\ninstall: pip install -c THIS_FILE ...; check: rlsdk env --check THIS_FILE"),
            end="",
        )
    return 0


def cmd_new_plugin(ns: argparse.Namespace) -> int:
    """``rlsdk new-plugin``: generate a plugin package (see :func:`rlsdk.scaffold.new_plugin`)."""
    from rlsdk.scaffold import new_plugin, next_steps

    project = new_plugin(
        ns.name,
        ns.component,
        ns.output_dir,
        author=ns.author,
        description=ns.description,
        github_username=ns.github_username,
        no_input=ns.no_input,
        template=ns.template,
        registry=_registry(ns.plugin) if ns.plugin else None,
    )
    print(next_steps(project))
    return 0


def _seeds_arg(text: str | None) -> int | list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected a count such as 5 or a list such as 0,1,2") from None
    return values[0] if "," not in text else values


def _compare_and_write(exp_dir: Path, ns: argparse.Namespace, registry, baseline=None, score=None, last=None):
    """Compare an experiment folder's arms (``ns``: the comparison flags); write comparison.json and .md."""
    from rlsdk.provenance.rundir import atomic_write_text
    from rlsdk.research.compare import compare
    from rlsdk.research.experiment import describe_score, load_scores
    from rlsdk.trainer import evaluate_checkpoint

    scores, seeds, spec = load_scores(exp_dir, score, last, evaluate=lambda d: evaluate_checkpoint(d, registry))
    paired = spec.paired if ns.paired is None else ns.paired
    result = compare(
        scores, baseline, metric=ns.metric, confidence=ns.confidence, reps=ns.reps, alpha=ns.alpha, seed=ns.stats_seed,
        paired=paired, seeds=seeds,
    )  # fmt: skip
    score = score or spec.score
    result.notes.insert(
        0, f"Score of a run: {describe_score(score, last or spec.last)}; tasks: {', '.join(spec.tasks)}."
    )
    data = {**result.to_dict(), "score": score, "seeds": seeds, "tasks": list(spec.tasks)}
    atomic_write_text(exp_dir / "comparison.json", json.dumps(data, indent=2) + "\n")
    atomic_write_text(exp_dir / "comparison.md", f"# {spec.name}\n\n" + result.to_markdown())
    return result, data


def cmd_experiment(ns: argparse.Namespace) -> int:
    """``rlsdk experiment`` and ``rlsdk ablate``."""
    from rlsdk.config import load_yaml
    from rlsdk.research.experiment import load_spec, run_experiment

    registry = _registry(ns.plugin)
    spec = load_spec(ns.spec, ns.overrides, _seeds_arg(ns.seeds))
    if ns.command == "ablate" and "ablations" not in load_yaml(ns.spec, "ablation file"):
        raise ConfigError(
            f"{ns.spec!r} lists arms, not an ablation: give 'full' and 'ablations' (or run `rlsdk experiment`)"
        )
    exp_dir = Path(ns.out) if ns.out else Path("experiments") / spec.name
    runs = len(spec.arms) * len(spec.tasks) * len(spec.seeds)
    print(
        f"experiment {spec.name!r}: {len(spec.arms)} arm(s) x {len(spec.tasks)} task(s) x {len(spec.seeds)} seed(s) "
        f"= {runs} runs in {exp_dir}"
    )
    from rlsdk.provenance.rundir import FolderLock
    from rlsdk.research.report import report

    with FolderLock(exp_dir, "experiment folder"):  # through the comparison and its plots
        run_experiment(spec, registry, exp_dir, log=lambda line: print(line, flush=True), progress=not ns.no_progress)
        result, _ = _compare_and_write(exp_dir, ns, registry)
        print()
        print(result.to_markdown(), end="")
        plots = ", ".join(str(p) for p in report(exp_dir))
    print(f"\nwritten: {exp_dir / 'comparison.md'}, {exp_dir / 'comparison.json'}, {plots}")
    return 0


def cmd_sweep(ns: argparse.Namespace) -> int:
    from rlsdk.research.sweep import load_sweep, run_sweep

    spec = load_sweep(ns.spec, ns.overrides, ns.trials)
    sweep_dir = Path(ns.out) if ns.out else Path("sweeps") / spec.name
    print(
        f"sweep {spec.name!r}: {spec.trials} trial(s) x {len(spec.seeds)} seed(s), {spec.sampler} sampler, "
        f"{spec.direction} {spec.score}, in {sweep_dir}"
    )
    summary = run_sweep(
        spec, _registry(ns.plugin), sweep_dir, log=lambda line: print(line, flush=True), progress=not ns.no_progress
    )
    done = sorted(
        (t for t in summary["trials"] if t["state"] == "COMPLETE"),
        key=lambda t: t["value"],
        reverse=spec.direction == "maximize",
    )
    print(f"\nbest of {len(done)} finished trial(s):")
    for t in done[:5]:
        print(
            f"  trial {t['number']:>4}  {t['value']:.4f}  "
            + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        )
    if "importances" in summary:
        print(
            "importances ("
            + summary["importance_method"]
            + "): "
            + ", ".join(f"{k} {v:.2f}" for k, v in summary["importances"].items())
        )
    best = summary["best"]["overrides"]
    train_cmd = shlex.join(["rlsdk", "train", *([spec.config] if spec.config else []), *spec.overrides, *best])
    print(
        f"\nThe best value is optimistic: it is the best of {len(done)} noisy estimates. Confirm it on fresh seeds\n"
        f"beside your baseline, as an experiment arm:  tuned: [{', '.join(best)}]\n"
        f"train it alone: {train_cmd}\nwritten: {sweep_dir / 'sweep.json'}"
    )
    return 0


def cmd_report(ns: argparse.Namespace) -> int:
    from rlsdk.research.report import report

    for path in report(ns.path, smooth=ns.smooth):
        print(f"written: {path}")
    return 0


def cmd_reproduce(ns: argparse.Namespace) -> int:
    from rlsdk.research.reproduce import reproduce

    report = reproduce(ns.run_dir, _registry(ns.plugin), ns.out, steps=ns.steps, atol=ns.atol, rtol=ns.rtol)
    print(json.dumps(report.to_dict(), indent=2) if ns.json else report.to_text())
    return 0 if report.identical else 1


def cmd_compare(ns: argparse.Namespace) -> int:
    exp_dir = Path(ns.exp_dir)
    if ns.last is not None and ns.score is None:
        raise ConfigError("--last only applies with --score (the experiment's own score already fixes it)")
    from rlsdk.provenance.rundir import FolderLock

    if not (exp_dir / "experiment.yaml").is_file():
        raise ConfigError(
            f"{str(exp_dir)!r} is not an experiment folder (no experiment.yaml); run `rlsdk experiment` first"
        )
    with FolderLock(exp_dir, "experiment folder"):
        result, data = _compare_and_write(exp_dir, ns, _registry(ns.plugin), ns.baseline, ns.score, ns.last)
    print(json.dumps(data, indent=2) if ns.json else result.to_markdown(), end="\n" if ns.json else "")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rlsdk`` command."""
    parser = build_parser()
    ns, extra = parser.parse_known_args(argv)
    # argparse stops filling a `key=value ...` positional at the first option; take the ones after it too
    field = next((f for f in ("args", "overrides") if isinstance(getattr(ns, f, None), list)), None)
    if extra and (field is None or any(a.startswith("-") or "=" not in a for a in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra and field is not None:
        setattr(ns, field, [*getattr(ns, field), *extra])
    handlers = {
        "train": cmd_train, "eval": cmd_eval, "plugins": cmd_plugins, "env": cmd_env, "new-plugin": cmd_new_plugin,
        "experiment": cmd_experiment, "ablate": cmd_experiment, "compare": cmd_compare, "sweep": cmd_sweep,
        "reproduce": cmd_reproduce, "report": cmd_report,
    }  # fmt: skip
    handler = handlers[ns.command]
    debug = bool(getattr(ns, "debug", False)) or os.environ.get("RLSDK_DEBUG", "").strip().lower() not in (
        "",
        "0",
        "false",
        "no",
    )
    prefix = f"rlsdk {ns.command}"
    try:
        return handler(ns)
    except Interrupted as exc:
        where = f"checkpoint {exc.checkpoint} written" if exc.checkpoint else "the last checkpoint is kept"
        again = "run the same command again"
        if ns.command == "train" and exc.run_dir:
            again = shlex.join(["rlsdk", "train", "--resume", exc.run_dir])
        print(f"{prefix}: stopped by {signal.Signals(exc.signum).name}; {where}; to continue: {again}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except (RlsdkError, OSError) as exc:
        if debug:
            raise
        print(f"{prefix}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback with --debug
        if debug:
            raise
        print(
            f"{prefix}: internal error: {type(exc).__name__}: {_one_line(exc)} (a bug in rlsdk or a plugin; "
            "rerun with --debug for the traceback and report it)",
            file=sys.stderr,
        )
        return 1


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (a YAML parser's, say, spans several)."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
