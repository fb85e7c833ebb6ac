"""The plugin template (cookiecutter-plugin/) and `rlsdk new-plugin` (rlsdk.scaffold).

Fast tests check the validation (a rejected name writes nothing), the generated files and the CLI.
The slow tests are the template's quality bar: each component kind alone and all four together are
generated, installed into a fresh virtual environment that reuses the installed rlsdk and torch,
tested with the generated project's own tests, and trained with `rlsdk train configs/train.yaml`.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import site
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

import rlsdk
from rlsdk import ConfigError
from rlsdk.cli import main
from rlsdk.config import load_config
from rlsdk.kinds import KINDS
from rlsdk.plugins import Registry, get_plugin_manager, get_registry
from rlsdk.scaffold import COMPONENT_KINDS, TEMPLATE_ENV, find_template, new_plugin, parse_components, plugin_names

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "cookiecutter-plugin"

#: Files every generated project has, whatever components it includes (relative to the project).
COMMON_FILES = {
    ".github/workflows/test.yml",
    ".gitignore",
    "README.md",
    "configs/train.yaml",
    "configs/compare.yaml",
    "pyproject.toml",
    "src/{module}/__init__.py",
    "src/{module}/plugin.py",
    "src/{module}/py.typed",
    "tests/test_plugin.py",
}


def read_toml(path: Path) -> dict:
    """Parse a TOML file (tomllib from Python 3.11; tomli before)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads(path.read_text())


def project_files(project: Path) -> set[str]:
    """Paths of the files under ``project``, relative to it, without caches."""
    return {
        p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


def expected_files(module: str, kinds: list[str]) -> set[str]:
    """The exact file set of a project generated with ``kinds``."""
    files = {f.format(module=module) for f in COMMON_FILES}
    for kind in kinds:
        files |= {f"src/{module}/{kind}.py", f"tests/test_{kind}.py"}
    return files


# --------------------------------------------------------------------------------------------------
# Validation: rejected before anything is written


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "not a valid distribution name"),
        ("-leading", "not a valid distribution name"),
        ("trailing-", "not a valid distribution name"),
        ("has space", "not a valid distribution name"),
        ("../escape", "not a valid distribution name"),
        ("naïve", "not a valid distribution name"),
        ("1plugin", "not a valid Python identifier"),
        ("class", "not a valid Python identifier"),
        ("rlsdk-plugins", "rlsdk's own"),
        ("RLSDK", "rlsdk's own"),
    ],
)
def test_bad_names_are_rejected_and_nothing_is_written(tmp_path, name, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        new_plugin(name, ["loss"], tmp_path)
    assert repr(name) in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["pluggy", "PyYAML", "jinja2"])
def test_installed_distribution_names_are_rejected(tmp_path, name):
    with pytest.raises(
        ConfigError, match=rf"plugin name '{name}' is taken: the distribution '\S+' [\d.]+ is already installed"
    ):
        new_plugin(name, ["loss"], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_importable_module_names_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"module name 'json', but a module of that name is already importable"):
        new_plugin("json", ["reward"], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_component_names_registered_by_an_installed_plugin_are_rejected(tmp_path):
    existing = types.ModuleType("ext_clash")

    @rlsdk.hookimpl
    def register_rewards(register):
        register("clash_digit_count", lambda: None)

    existing.register_rewards = register_rewards
    registry = Registry(*get_plugin_manager(load_entrypoints=False, extra=[existing]))
    new_plugin("rlsdk-clash", ["loss"], tmp_path / "ok", registry=registry, no_input=True)  # no reward: no clash
    with pytest.raises(
        ConfigError,
        match=r"would register the reward 'clash_digit_count', which the installed plugin ext_clash already",
    ):
        new_plugin("rlsdk-clash", ["reward"], tmp_path / "out", registry=registry)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r"would register the algorithm 'grpo', which the installed plugin"):
        new_plugin("rlsdk-grpo", ["loss"], tmp_path / "out", no_input=True)  # the preset is named after the plugin
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("components", "message"),
    [
        (
            ["lsos"],
            "unknown component kind 'lsos' for a new plugin (did you mean 'loss'?); "
            "valid: loss, advantage, sampler, reward or all",
        ),
        ([], "needs at least one component kind"),
        ("rewards", "unknown component kind 'rewards'"),
    ],
)
def test_unknown_or_missing_component_kinds_are_rejected(tmp_path, components, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        new_plugin("rlsdk-fine", components, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_target_directory_is_left_alone(tmp_path):
    target = tmp_path / "rlsdk-exists"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=re.escape(f"{str(target)!r} already exists")):
        new_plugin("rlsdk-exists", ["loss"], tmp_path)
    assert project_files(target) == {"notes.txt"} and (target / "notes.txt").read_text() == "mine"


def test_a_name_is_required_without_prompts(tmp_path):
    with pytest.raises(ConfigError, match="a plugin name is required"):
        new_plugin(None, ["loss"], tmp_path)


def test_parse_components_expands_all_and_orders():
    assert parse_components("all") == list(COMPONENT_KINDS)
    assert parse_components(["reward", "loss", "reward"]) == ["loss", "reward"]


# --------------------------------------------------------------------------------------------------
# The template itself


def test_template_hook_rejects_bad_answers_without_leaving_files(tmp_path):
    """Used directly with cookiecutter (no rlsdk checks first), the pre_gen hook still refuses."""
    from cookiecutter.exceptions import FailedHookException
    from cookiecutter.main import cookiecutter

    for context in ({"plugin_name": "1bad"}, {"plugin_name": "rlsdk-none", "include_loss": False}):
        with pytest.raises(FailedHookException):
            cookiecutter(str(TEMPLATE), no_input=True, extra_context=context, output_dir=str(tmp_path))
        assert list(tmp_path.iterdir()) == []


def test_template_hook_checks_installed_names_when_not_done_already(tmp_path, capfd):
    """Interactive answers are checked by the hook through rlsdk.scaffold.check_installed."""
    from cookiecutter.exceptions import FailedHookException
    from cookiecutter.main import cookiecutter

    with pytest.raises(FailedHookException):
        cookiecutter(str(TEMPLATE), no_input=True, extra_context={"plugin_name": "pluggy"}, output_dir=str(tmp_path))
    assert "plugin name 'pluggy' is taken" in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["rlsdk-my-loss", "My.Plugin_X", "rlsdk_foo", "plainname", "rlsdk-2"])
def test_template_derives_the_same_names_as_scaffold(name):
    from cookiecutter.generate import generate_context
    from cookiecutter.prompt import prompt_for_config

    context = generate_context(str(TEMPLATE / "cookiecutter.json"), extra_context={"plugin_name": name})
    rendered = prompt_for_config(context, no_input=True)
    names = plugin_names(name, "all")
    assert (rendered["__module"], rendered["__prefix"]) == (names.module, names.prefix)
    assert {kind: rendered[f"__{kind}_name"] for kind in COMPONENT_KINDS} == names.components


def test_exact_files_and_names_for_one_combination(tmp_path):
    project = new_plugin("rlsdk-two-kinds", ["reward", "loss"], tmp_path, author="A. Author", description="Two kinds")
    names = plugin_names("rlsdk-two-kinds", ["loss", "reward"])
    assert project == tmp_path / "rlsdk-two-kinds"
    assert project_files(project) == expected_files("rlsdk_two_kinds", ["loss", "reward"])
    pyproject = read_toml(project / "pyproject.toml")
    assert pyproject["project"]["name"] == "rlsdk-two-kinds"
    assert pyproject["project"]["authors"] == [{"name": "A. Author"}]
    assert pyproject["project"]["entry-points"]["rlsdk"] == {"two_kinds": "rlsdk_two_kinds.plugin"}
    plugin_py = (project / "src/rlsdk_two_kinds/plugin.py").read_text()
    assert "register_losses" in plugin_py and "register_rewards" in plugin_py and "register_samplers" not in plugin_py
    loss_py = (project / "src/rlsdk_two_kinds/loss.py").read_text()
    assert f'NAME = "{names.components["loss"]}"' in loss_py and "register(NAME, ScaledReinforce)" in loss_py
    assert "register(NAME, DigitCount)" in (project / "src/rlsdk_two_kinds/reward.py").read_text()
    assert 'PRESET = "two_kinds"' in plugin_py and 'reward.NAME: {"weight": 0.2}' in plugin_py
    config = yaml.safe_load((project / "configs/train.yaml").read_text())
    assert config == {"algorithm": "two_kinds", "seed": 0, "train": {"steps": 300}}


def test_each_name_is_written_once_and_renaming_it_renames_the_component(tmp_path, monkeypatch):
    """A component's name is in its module's NAME only: the hooks, the preset, configs and tests follow it."""
    project = new_plugin("rlsdk-once", "all", tmp_path)
    names = plugin_names("rlsdk-once", "all")
    files = {rel: (project / rel).read_text() for rel in project_files(project)}
    for kind, name in names.components.items():
        written = {rel: text.count(name) for rel, text in files.items() if name in text}
        assert written == {f"src/rlsdk_once/{kind}.py": 1}, (kind, written)
        hook = KINDS[kind].hook  # the template's hooks are the table's
        assert f"def {hook}(register: Register)" in files[f"src/rlsdk_once/{kind}.py"]
    loss_py = project / "src/rlsdk_once/loss.py"
    loss_py.write_text(loss_py.read_text().replace(names.components["loss"], "renamed_loss"))
    monkeypatch.syspath_prepend(str(project / "src"))
    for module in [m for m in sys.modules if m.split(".")[0] == "rlsdk_once"]:
        monkeypatch.delitem(sys.modules, module)
    plugin = importlib.import_module("rlsdk_once.plugin")
    registry = get_registry(extra=[plugin])
    assert "renamed_loss" in registry.names("loss") and names.components["loss"] not in registry.names("loss")
    config = load_config(registry, project / "configs/train.yaml")
    assert config["algorithm"] == "once" and config["loss"]["name"] == "renamed_loss"
    assert config["rewards"][names.components["reward"]]["weight"] == 0.2
    assert config["advantage"]["name"] == names.components["advantage"]
    assert config["sampler"] == {
        "name": names.components["sampler"], "n": 16, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 4
    }  # fmt: skip
    for module in [m for m in sys.modules if m.split(".")[0] == "rlsdk_once"]:
        monkeypatch.delitem(sys.modules, module)


@pytest.mark.parametrize("kinds", [[kind] for kind in COMPONENT_KINDS] + [["all"]], ids=lambda k: k[0])
def test_generated_files_are_fully_rendered_and_parse(tmp_path, kinds):
    description = 'Quotes " and \\ backslashes survive'
    project = new_plugin("rlsdk-render", kinds, tmp_path, description=description, author="O'Brien")
    chosen = parse_components(kinds)
    assert project_files(project) == expected_files("rlsdk_render", chosen)
    for rel in project_files(project):
        text = (project / rel).read_text()
        if rel == ".github/workflows/test.yml":
            assert "${{ matrix.python-version }}" in text  # GitHub's own expressions, kept by {% raw %}
            text = re.sub(r"\$\{\{[^}]*\}\}", "", text)
        for token in ("{{", "}}", "{%", "%}", "{#", "cookiecutter."):
            assert token not in text, f"{rel}: unrendered {token!r}"
        if rel.endswith(".py"):
            ast.parse(text, filename=rel)
        elif rel.endswith((".yaml", ".yml")):
            yaml.safe_load(text)
    pyproject = read_toml(project / "pyproject.toml")
    assert pyproject["project"]["description"] == description
    assert pyproject["project"]["authors"] == [{"name": "O'Brien"}]


# --------------------------------------------------------------------------------------------------
# Template lookup and the CLI


def test_find_template_locations(tmp_path, monkeypatch):
    assert find_template() == TEMPLATE
    with pytest.raises(
        ConfigError, match=re.escape(f"no cookiecutter.json in {str(tmp_path)!r} (from the template argument)")
    ):
        find_template(tmp_path)
    monkeypatch.setenv(TEMPLATE_ENV, str(tmp_path))
    with pytest.raises(ConfigError, match=re.escape(f"(from ${TEMPLATE_ENV})")):
        find_template()
    (tmp_path / "cookiecutter.json").write_text("{}")
    assert find_template() == tmp_path


def test_cli_creates_a_plugin_and_prints_the_next_commands(tmp_path, capsys):
    args = [
        "new-plugin",
        "rlsdk-cli-made",
        "--component",
        "sampler",
        "--component",
        "advantage",
        "--output-dir",
        str(tmp_path),
    ]
    assert main([*args, "--no-input", "--author", "Ada", "--github-username", "ada"]) == 0
    out = capsys.readouterr().out
    project = tmp_path / "rlsdk-cli-made"
    assert f"Created the plugin package {project}" in out
    for command in ("pip install -e", "pytest", "rlsdk train configs/train.yaml"):
        assert command in out
    assert project_files(project) == expected_files("rlsdk_cli_made", ["advantage", "sampler"])
    assert "https://github.com/ada/rlsdk-cli-made" in (project / "pyproject.toml").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["new-plugin", "--no-input"], "a plugin name is required"),
        (["new-plugin", "bad name", "--no-input"], "plugin name 'bad name' is not a valid distribution name"),
        (["new-plugin", "pluggy", "--no-input"], "plugin name 'pluggy' is taken"),
    ],
)
def test_cli_errors_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    assert main([*args, "--output-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_interactive_hands_the_answers_to_cookiecutter_as_defaults(tmp_path, monkeypatch, capsys):
    import cookiecutter.main

    calls = []

    def fake_cookiecutter(template, **kwargs):
        calls.append((template, kwargs))
        return str(tmp_path / "made")

    monkeypatch.setattr(cookiecutter.main, "cookiecutter", fake_cookiecutter)
    args = ["new-plugin", "rlsdk-asked", "--component", "reward", "--output-dir", str(tmp_path), "--description", "D"]
    assert main(args) == 0
    [(template, kwargs)] = calls
    assert template == str(TEMPLATE)
    assert kwargs["no_input"] is False and kwargs["output_dir"] == str(tmp_path)
    assert kwargs["extra_context"] == {
        "plugin_name": "rlsdk-asked",
        "include_loss": False,
        "include_advantage": False,
        "include_sampler": False,
        "include_reward": True,
        "description": "D",
        "_rlsdk_checked": False,  # the template's hook checks the answers against what is installed
    }
    assert str(tmp_path / "made") in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# Quality bar: generate, install into a fresh venv, run the generated tests, train


def make_venv(path: Path) -> Path:
    """A virtual environment that sees this interpreter's packages (rlsdk, torch, pytest); its python."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(path)], check=True, timeout=120
    )
    python = path / "bin" / "python"
    if sys.prefix != sys.base_prefix:  # running inside a venv: --system-site-packages would skip its packages
        venv_site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        # site.addsitedir (not a bare path line) also runs the parent's .pth files: an editable install
        # of rlsdk is such a file (setuptools' import hook), and a bare path would not find it.
        parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
        Path(venv_site, "_rlsdk_parent.pth").write_text(f"import site; list(map(site.addsitedir, {parents!r}))\n")
    return python


def clean_env() -> dict[str, str]:
    """This process's environment without the variables that change which plugins rlsdk loads."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RLSDK_", "PYTEST_")) and k != "PYTHONPATH"}


@pytest.fixture(scope="module", params=[[kind] for kind in COMPONENT_KINDS] + [["all"]], ids=lambda k: k[0])
def installed_project(request, tmp_path_factory, cookiecutter_home):
    """A generated project installed (editable, offline) into its own fresh venv."""
    kinds = request.param
    name = f"rlsdk-tpl-{kinds[0]}"
    root = tmp_path_factory.mktemp(f"tpl-{kinds[0]}")
    project = new_plugin(name, kinds, root / "src", description=f"template test: {kinds[0]}")
    python = make_venv(root / "venv")
    proc = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-e",
            str(project),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return types.SimpleNamespace(project=project, python=python, names=plugin_names(name, kinds), root=root)


@pytest.mark.slow
def test_generated_project_passes_its_own_tests(installed_project):
    proc = subprocess.run(
        [str(installed_project.python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=installed_project.project,
        capture_output=True,
        text=True,
        timeout=600,
        env=clean_env(),
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) > 0, summary
    assert not re.search(r"failed|error|skipped", summary), summary


@pytest.mark.slow
def test_generated_project_trains_with_its_config(installed_project):
    run = installed_project.root / "run"
    cmd = [
        str(installed_project.python),
        "-m",
        "rlsdk.cli",
        "train",
        "configs/train.yaml",
        "train.steps=2",
        "train.prompts_per_step=4",
        "sampler.n=4",
        "run.plot=false",
        "--no-progress",
        "--run-dir",
        str(run),
    ]
    proc = subprocess.run(
        cmd, cwd=installed_project.project, capture_output=True, text=True, timeout=600, env=clean_env()
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    config = yaml.safe_load((run / "config.yaml").read_text())
    components = installed_project.names.components
    for section in ("loss", "advantage", "sampler"):
        if section in components:
            assert config[section]["name"] == components[section]
    if "reward" in components:
        assert config["rewards"][components["reward"]]["weight"] > 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert any(p.get("distribution") == installed_project.names.distribution for p in manifest["plugins"])


@pytest.mark.slow
def test_generated_project_compares_with_the_reference(installed_project):
    """configs/compare.yaml: an experiment whose `reference` arm swaps rlsdk's components back in."""
    out = installed_project.root / "exp"
    cmd = [
        str(installed_project.python), "-m", "rlsdk.cli", "experiment", "configs/compare.yaml", "train.steps=1",
        "train.prompts_per_step=2", "eval.size=4", "run.plot=false", "--seeds", "2", "--out", str(out), "--reps", "100",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=installed_project.project, capture_output=True, text=True, timeout=600, env=clean_env()
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    arm = installed_project.names.distribution
    assert f"| {arm} | 2 |" in proc.stdout and "| **reference** (baseline) | 2 |" in proc.stdout
    reference, mine = (
        yaml.safe_load((out / "runs" / a / "default" / "seed_0" / "config.yaml").read_text())
        for a in ("reference", arm)
    )
    components = installed_project.names.components
    for section, builtin in (("loss", "clipped_pg"), ("advantage", "grpo"), ("sampler", "group")):
        if section in components:
            assert mine[section]["name"] == components[section] and reference[section]["name"] == builtin
    if "sampler" in components:
        assert mine["sampler"]["n"] == reference["sampler"]["n"] == 16
    if "reward" in components:
        assert mine["rewards"][components["reward"]]["weight"] > 0 and components["reward"] not in reference["rewards"]
    assert mine["algorithm"] == installed_project.names.prefix and reference["algorithm"] == "grpo"


@pytest.mark.slow
def test_template_ships_inside_the_wheel(tmp_path):
    """`rlsdk new-plugin` works from a wheel: every template file is package data of rlsdk."""
    import subprocess
    import sys
    import zipfile

    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
        str(ROOT),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("rlsdk-*.whl")
    shipped = {
        n.removeprefix("rlsdk/_template/")
        for n in zipfile.ZipFile(wheel).namelist()
        if n.startswith("rlsdk/_template/")
    }
    template = {
        p.relative_to(TEMPLATE).as_posix() for p in TEMPLATE.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    assert template and shipped == template
