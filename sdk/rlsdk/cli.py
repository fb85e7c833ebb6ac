"""The ``rlsdk`` command line.

``rlsdk train [CONFIG.yaml] [key=value ...] [--resume RUN_DIR]``
    Train (default: GRPO on the ``reverse`` task, on the CPU).
``rlsdk eval RUN_DIR [key=value ...]``
    Score the run's latest checkpoint on the task's held-out examples.
``rlsdk plugins [--json]``
    List installed plugins and what they register.
``rlsdk new-plugin [NAME] [--component KIND ...] [--output-dir DIR] [--no-input]``
    Create a plugin package from the cookiecutter template.

Every command accepts ``--plugin FILE.py`` (repeatable) to load a plugin from a file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rlsdk.errors import ConfigError, RlsdkError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rlsdk`` (also used to generate the CLI reference)."""
    parser = argparse.ArgumentParser(prog="rlsdk", description="Plugin-based RL post-training for language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    def plugin_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--plugin", action="append", default=[], metavar="FILE", help="load a plugin from a .py file (repeatable)")

    train = sub.add_parser("train", help="train a policy", description="Train a policy. Arguments ending in .yaml/.yml are a config file; key=value pairs override settings.")
    train.add_argument("args", nargs="*", metavar="[CONFIG.yaml] [key=value]", help="config file and dotted overrides, e.g. train.steps=50 loss.name=reinforce")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    train.add_argument("--run-dir", metavar="DIR", help="where to write the run (default: runs/<algorithm>-<task>-<time>)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    plugin_flag(train)

    ev = sub.add_parser("eval", help="evaluate a run's checkpoint on held-out prompts", description="Score a checkpoint on the task's held-out prompts; writes RUN_DIR/eval.json.")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("overrides", nargs="*", metavar="key=value", help="overrides, e.g. eval.size=50 task.max_digits=5")
    ev.add_argument("--checkpoint", metavar="FILE", help="checkpoint to load (default: the latest)")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    plugin_flag(ev)

    pl = sub.add_parser("plugins", help="list installed plugins", description="List installed plugins, their distribution, version and what they register.")
    pl.add_argument("--json", action="store_true", help="print JSON")
    plugin_flag(pl)

    from rlsdk.scaffold import COMPONENT_KINDS

    np_ = sub.add_parser(
        "new-plugin",
        help="create a plugin package from the template",
        description="Create a plugin package from rlsdk's cookiecutter template: an installable package with a worked "
        "example of each chosen component kind, its tests, a README, a CI workflow and configs/train.yaml. Without "
        "--no-input, cookiecutter asks for each answer (the options given are the defaults it offers).",
    )
    np_.add_argument("name", nargs="?", metavar="NAME", help="distribution name of the plugin, e.g. rlsdk-my-loss (required with --no-input)")
    np_.add_argument(
        "--component",
        action="append",
        choices=[*COMPONENT_KINDS, "all"],
        metavar="KIND",
        help=f"component kind to include an example of (repeatable): {', '.join(COMPONENT_KINDS)} or all (default: loss)",
    )
    np_.add_argument("--output-dir", default=".", metavar="DIR", help="where to create the package folder (default: the current directory)")
    np_.add_argument("--author", metavar="A", help="author for pyproject.toml and the README")
    np_.add_argument("--description", metavar="D", help="one-line description")
    np_.add_argument("--github-username", metavar="U", help="GitHub user or organisation for the project URLs")
    np_.add_argument("--no-input", action="store_true", help="do not prompt; take the answers from the options")
    np_.add_argument("--template", metavar="DIR", help="template folder (default: $RLSDK_PLUGIN_TEMPLATE, else the repository's cookiecutter-plugin/)")
    plugin_flag(np_)
    return parser


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
    from rlsdk.config import dump_yaml, load_config, load_yaml
    from rlsdk.trainer import train

    registry = _registry(ns.plugin)
    path, overrides = _split_args(ns.args)
    if ns.resume:
        if path:
            raise ConfigError("--resume takes the run's own config.yaml; give only key=value overrides")
        run_dir = Path(ns.resume)
        base = load_yaml(run_dir / "config.yaml")
        config = load_config(registry, overrides=overrides, base=base)
    else:
        run_dir = Path(ns.run_dir) if ns.run_dir else None
        config = load_config(registry, path, overrides)
    if ns.print_config:
        print(dump_yaml(config), end="")
        return 0
    summary = train(config, registry, run_dir=run_dir, resume=bool(ns.resume), progress=False if ns.no_progress else None)
    print(
        f"run: {summary['run_dir']}\n"
        f"steps: {summary['steps']}  reward first {summary['reward_first']:.3f}  "
        f"last-10 mean {summary['reward_last10']:.3f}  max {summary['reward_max']:.3f}"
    )
    return 0


def cmd_eval(ns: argparse.Namespace) -> int:
    from rlsdk.config import load_config, load_yaml
    from rlsdk.rundir import RunDir
    from rlsdk.trainer import build_run, evaluate

    registry = _registry(ns.plugin)
    run_dir = RunDir(ns.run_dir)
    config = load_config(registry, overrides=ns.overrides, base=load_yaml(run_dir.config_path))
    ckpt = Path(ns.checkpoint) if ns.checkpoint else run_dir.latest_checkpoint()
    if ckpt is None:
        raise ConfigError(f"no checkpoint in {str(run_dir.checkpoints)!r}; train first or pass --checkpoint")
    state = RunDir.load_checkpoint(ckpt)
    run = build_run(config, registry, run_dir.path)
    run.policy.load_state_dict(state["policy"])
    result: dict[str, Any] = {"checkpoint": str(ckpt), "step": int(state["step"]), **evaluate(run, config["eval"]["size"], config["eval"]["temperature"])}
    run_dir.write_json("eval.json", result)
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rlsdk`` command."""
    ns = build_parser().parse_args(argv)
    handler = {"train": cmd_train, "eval": cmd_eval, "plugins": cmd_plugins, "new-plugin": cmd_new_plugin}[ns.command]
    try:
        return handler(ns)
    except RlsdkError as exc:
        print(f"rlsdk {ns.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
