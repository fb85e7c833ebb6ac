"""The Sphinx site builds (offline, warnings as errors), its generated references are complete, its
examples run, and every public object has a docstring."""

from __future__ import annotations

import html
import importlib
import inspect
import re
import runpy
import shlex
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import rlsdk
from rlsdk import hookspecs
from rlsdk.cli import build_parser
from rlsdk.cli import main as rlsdk_cli
from rlsdk.provenance.rundir import read_metrics

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.py"))
# The public modules whose functions and classes must be documented (besides rlsdk.__all__).
PUBLIC_MODULES = [
    "rlsdk.config",
    "rlsdk.trainer",
    "rlsdk.progress",
    "rlsdk.plugins",
    "rlsdk.provenance",
    "rlsdk.provenance.seeds",
    "rlsdk.provenance.manifest",
    "rlsdk.provenance.packages",
    "rlsdk.provenance.rundir",
    "rlsdk.validation",
    "rlsdk.functional",
    "rlsdk.research",
    "rlsdk.research.stats",
    "rlsdk.research.experiment",
    "rlsdk.research.compare",
    "rlsdk.research.sweep",
    "rlsdk.research.reproduce",
    "rlsdk.research.report",
    "rlsdk.scaffold",
    "rlsdk.testing",
]
# The tiny run of docs/getting-started.md, for tests that train.
TINY = ["train.steps=2", "train.prompts_per_step=4", "sampler.n=4", "run.plot=false", "--no-progress"]


def _hook_names() -> list[str]:
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "rlsdk_spec")]


def _text(page: Path) -> str:
    """The text of an HTML page's article (no navigation), tags removed and entities decoded."""
    source = page.read_text(encoding="utf-8")
    article = source[source.index("<article") : source.index("</article>")]
    return html.unescape(re.sub(r"<[^>]+>", "", article))


# --------------------------------------------------------------------------------------------------
# The build


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Build the site once for this module: ``sphinx -W --keep-going -n -b html`` (as .ci/run does)."""
    pytest.importorskip("sphinx")
    out = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html", str(DOCS), str(out / "html")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, f"the docs build failed:\n{proc.stderr[-6000:]}"
    assert proc.stderr.strip() == "", f"the docs build printed warnings:\n{proc.stderr[-6000:]}"
    return out / "html"


@pytest.mark.slow
def test_every_page_is_built_and_in_the_toctree(site):
    sources = {p.stem for p in DOCS.glob("*.md")} | {p.stem for p in DOCS.glob("*.rst")}
    built = {p.stem for p in site.glob("*.html")}
    assert sources <= built, f"pages not built: {sorted(sources - built)}"
    index = (site / "index.html").read_text(encoding="utf-8")
    for page in sorted(sources - {"index"}):
        assert f'href="{page}.html"' in index, f"docs/{page} is not linked from the site's navigation"


@pytest.mark.slow
def test_hook_reference_lists_every_hook(site):
    page = (site / "hooks.html").read_text(encoding="utf-8")
    registration, event = page.index('id="registration-hooks"'), page.index('id="event-hooks"')
    for name in _hook_names():
        assert f'id="rlsdk.hookspecs.{name}"' in page, f"hook {name} is missing from the hook reference"
        assert f'id="std-hook-{name}"' in page, f"hook {name} has no :hook: target"
        position = page.index(f'id="rlsdk.hookspecs.{name}"')
        assert (registration < position < event) == name.startswith("register_"), f"hook {name} is in the wrong group"


@pytest.mark.slow
def test_cli_reference_lists_every_subcommand(site):
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    page = (site / "cli.html").read_text(encoding="utf-8")
    text = _text(site / "cli.html")
    assert "usage: rlsdk [-h]" in text
    for name, sub in commands.items():
        assert f'id="cli-{name}"' in page, f"rlsdk {name} has no section in the CLI reference"
        assert f"usage: rlsdk {name}" in text
        for action in sub._actions:
            for flag in action.option_strings:
                assert flag in text, f"rlsdk {name} {flag} is missing from the CLI reference"


@pytest.mark.slow
def test_api_reference_documents_the_public_api(site):
    # objects.inv: four header lines, then zlib-compressed lines "name domain:role priority uri dispname".
    header, _, body = (site / "objects.inv").read_bytes().partition(b"zlib.\n")
    assert header.startswith(b"# Sphinx inventory version 2")
    entries = [line.split(" ", 2) for line in zlib.decompress(body).decode().splitlines()]
    documented = {name for name, role, _ in entries if role.startswith("py:")}
    for name in rlsdk.__all__:
        assert f"rlsdk.{name}" in documented, f"rlsdk.{name} is missing from the API reference"
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        assert module_name in documented, f"module {module_name} is missing from the API reference"
        for name in module.__all__:
            exported = name in rlsdk.__all__ and getattr(rlsdk, name) is getattr(module, name)
            assert f"{module_name}.{name}" in documented or exported, (
                f"{module_name}.{name} is missing from the API reference"
            )


# --------------------------------------------------------------------------------------------------
# The examples


def _run_example(path: Path, argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(path), *argv])
    runpy.run_path(str(path), run_name="__main__")


# resume_exactly.py trains 3 runs.
SCRIPTS = [
    pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name == "resume_exactly.py" else []) for p in EXAMPLES
]


@pytest.mark.parametrize("path", SCRIPTS)
def test_example_runs(path, tmp_path, monkeypatch, capsys):
    """Each example file runs as a script; its own asserts check what the docs say about it."""
    _run_example(path, [str(tmp_path)], monkeypatch)
    assert capsys.readouterr().out.strip(), f"{path.name} did not reach its final report"


def _documented_plugin_commands() -> list[str]:
    """Every ``rlsdk train --plugin docs/examples/...`` command line in the docs."""
    commands = []
    for page in sorted(DOCS.glob("*.md")):
        commands += re.findall(r"^rlsdk train --plugin docs/examples/.*$", page.read_text(), re.M)
    return commands


def test_every_plugin_example_has_a_documented_training_command():
    plugins = {p.name for p in EXAMPLES if "@rlsdk.hookimpl" in p.read_text()}
    used = {shlex.split(cmd)[3].rsplit("/", 1)[-1] for cmd in _documented_plugin_commands()}
    assert plugins and plugins <= used, (
        f"examples without an `rlsdk train --plugin` command in docs/: {sorted(plugins - used)}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("command", _documented_plugin_commands())
def test_documented_plugin_command_trains(command, tmp_path, monkeypatch):
    """The guides' commands train (shortened to one step of two prompts)."""
    monkeypatch.chdir(ROOT)
    argv = shlex.split(command)[1:] + ["train.steps=1", "train.prompts_per_step=2", "run.plot=false", "--no-progress"]
    assert rlsdk_cli([*argv, "--run-dir", str(tmp_path / "run")]) == 0
    assert [row["step"] for row in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1]


def test_tutorial_experiment_runs(tmp_path, capsys):
    """The tutorial's experiment file, with a built-in loss standing in for the plugin's, tiny runs."""
    text = re.search(
        r"^```yaml\n(name: scaled-vs-grpo\n.*?)^```", (DOCS / "tutorial.md").read_text(), re.S | re.M
    ).group(1)
    spec = tmp_path / "compare.yaml"
    spec.write_text(text.replace("loss.name=scaled_reinforce_scaled_reinforce", "loss.name=reinforce"))
    out = tmp_path / "exp"
    assert rlsdk_cli(["experiment", str(spec), *TINY[:-1], "--seeds", "2", "--out", str(out), "--reps", "100"]) == 0
    printed = capsys.readouterr().out
    assert "| scaled | 2 |" in printed and "P(arm > grpo)" in printed
    assert len(list(out.glob("runs/*/default/seed_*/summary.json"))) == 4


def test_experiment_example_is_valid():
    """examples/research/experiment.yaml: every run's config resolves (the guide shows this file)."""
    from rlsdk.config import load_config
    from rlsdk.research.experiment import load_spec

    spec = load_spec(ROOT / "examples" / "research" / "experiment.yaml")
    registry = rlsdk.get_registry()
    configs = [load_config(registry, spec.config, spec.run_overrides(arm, "default", 0)) for arm in spec.arms]
    assert [c["algorithm"] for c in configs] == ["grpo", "dr_grpo", "grpo"] and configs[2]["loss"]["entropy_coef"] == 0


def test_ablation_example_is_valid():
    """examples/research/ablation.yaml: every arm's config resolves and differs from full in one place."""
    from rlsdk.config import load_config
    from rlsdk.research.experiment import load_spec

    spec = load_spec(ROOT / "examples" / "research" / "ablation.yaml")
    registry = rlsdk.get_registry()
    full, *ablations = [
        load_config(registry, spec.config, spec.run_overrides(arm, "default", 0))["loss"] for arm in spec.arms
    ]
    assert spec.paired and list(spec.arms)[0] == "full" and full["kl_coef"] == 0.04
    for loss in ablations:
        assert sum(loss[k] != full[k] for k in full) == 1


def test_sweep_example_is_valid():
    """examples/research/sweep.yaml: both ends of every range give a valid config."""
    from rlsdk.config import load_config
    from rlsdk.research.sweep import load_sweep

    spec = load_sweep(ROOT / "examples" / "research" / "sweep.yaml")
    registry = rlsdk.get_registry()
    assert [p.kind for p in spec.space] == ["float", "float", "int"]
    for param in spec.space:
        for value in param.corners():
            config = load_config(registry, spec.config, spec.trial_overrides({param.key: value}, 0))
            section, key = param.key.split(".")
            assert config[section][key] == value


def test_tutorial_matches_the_generated_package(tmp_path):
    """The tutorial's `rlsdk new-plugin` command makes the files and the loss name the tutorial shows."""
    tutorial = (DOCS / "tutorial.md").read_text()
    command = re.search(r"^rlsdk new-plugin .*$", tutorial, re.M).group(0)
    assert rlsdk_cli([*shlex.split(command)[1:], "--output-dir", str(tmp_path)]) == 0
    tree = re.search(r"^```text\n(\S+)/\n(.*?)^```", tutorial, re.S | re.M)
    project = tmp_path / tree.group(1)
    shown, folders = set(), []
    for line in tree.group(2).splitlines():
        depth, entry = (len(line) - len(line.lstrip())) // 2, line.split()[0]
        folders = folders[: depth - 1]
        if entry.endswith("/"):
            folders.append(entry.rstrip("/"))
        else:
            shown.add("/".join([*folders, entry]))
    generated = {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}
    assert shown and shown <= generated, (
        f"the tutorial shows files the template does not make: {sorted(shown - generated)}"
    )
    loss_py = next(project.glob("src/*/loss.py")).read_text()
    for name in set(re.findall(r"loss\.name=(\w+)", tutorial)) - {"clipped_pg"}:
        assert f'NAME = "{name}"' in loss_py, f"the tutorial's loss {name!r} is not the generated one"
    config = (project / "configs" / "train.yaml").read_text()
    for name in set(re.findall(r"algorithm=(\w+)", tutorial)) - {"grpo"}:
        assert f"algorithm: {name}" in config, f"the tutorial's preset {name!r} is not the generated one"


def _python_blocks(page: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (DOCS / page).read_text(), re.S | re.M)


def test_every_python_block_of_the_guides_is_executed():
    """The ```python blocks of docs/*.md are exactly those the test below runs (others are ```text)."""
    blocks = {page.name: len(_python_blocks(page.name)) for page in DOCS.glob("*.md") if _python_blocks(page.name)}
    assert blocks == {"concepts.md": 1, "getting-started.md": 1, "plugins.md": 2}


@pytest.mark.slow
def test_python_blocks_of_the_guides_run(tmp_path, monkeypatch):
    # concepts.md: a batch built from its required fields, fed to a built-in estimator.
    (batch_block,) = _python_blocks("concepts.md")
    namespace: dict = {}
    exec(compile(batch_block, "concepts.md", "exec"), namespace)
    assert namespace["adv"].shape == (4, 3) and bool((namespace["adv"][2:] == 0).all())

    # getting-started.md: reading metrics.jsonl, on a tiny run of its own.
    run_dir = tmp_path / "run"
    assert rlsdk_cli(["train", *TINY, "--run-dir", str(run_dir)]) == 0
    (metrics_block,) = _python_blocks("getting-started.md")
    metrics_block = re.sub(r'"runs/[^"]+/metrics.jsonl"', repr(str(run_dir / "metrics.jsonl")), metrics_block)
    exec(compile(metrics_block, "getting-started.md", "exec"), namespace)
    assert len(namespace["rows"]) == 2

    # plugins.md: the smallest plugin, and the plugin test that uses rlsdk.testing on it.
    plugin, plugin_test = _python_blocks("plugins.md")
    (tmp_path / "my_rlsdk_plugin.py").write_text(plugin)
    (tmp_path / "test_my_plugin.py").write_text(plugin_test)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-W",
        "error",
        "--rootdir",
        str(tmp_path),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------------
# Docstrings


def _attribute_docstrings(module_name: str) -> set[str]:
    """Names of the module-level variables of ``module_name`` with a docstring (``#:`` or a string after)."""
    from sphinx.pycode import ModuleAnalyzer

    return {name for (scope, name) in ModuleAnalyzer.for_module(module_name).find_attr_docs() if scope == ""}


def _has_attribute_docstring(name: str, obj: object) -> bool:
    """Whether an rlsdk module that holds ``obj`` as ``name`` documents that variable."""
    modules = [
        m for m, module in list(sys.modules.items()) if m.startswith("rlsdk.") and getattr(module, name, None) is obj
    ]
    return any(name in _attribute_docstrings(m) for m in modules)


def _own_doc(obj: object) -> str:
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return (doc or "").strip()


def _public_methods(cls: type) -> list[str]:
    names = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        function = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
        if inspect.isfunction(function) and not _own_doc(function):
            names.append(name)
    return names


def test_public_api_has_docstrings():
    """Every name in rlsdk.__all__ and every public function and class of the public modules (and
    each public method of those classes) has a docstring of its own."""
    pytest.importorskip("sphinx")
    undocumented = []
    for name in rlsdk.__all__:
        obj = getattr(rlsdk, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not _own_doc(obj):
                undocumented.append(f"rlsdk.{name}")
            if inspect.isclass(obj):
                undocumented += [f"rlsdk.{name}.{m}" for m in _public_methods(obj)]
        elif name == "hookimpl":
            continue  # a pluggy.HookimplMarker instance, documented by hand in docs/api.rst
        elif not _has_attribute_docstring(name, obj):
            undocumented.append(f"rlsdk.{name}")
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        if not (module.__doc__ or "").strip():
            undocumented.append(module_name)
        for name, obj in vars(module).items():
            if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if getattr(obj, "__module__", None) != module_name:
                continue  # imported, checked where it is defined
            if not _own_doc(obj):
                undocumented.append(f"{module_name}.{name}")
            if inspect.isclass(obj):
                undocumented += [f"{module_name}.{name}.{m}" for m in _public_methods(obj)]
    assert not undocumented, "public objects without a docstring:\n  " + "\n  ".join(undocumented)
