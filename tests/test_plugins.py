"""Plugin discovery through entry points, error isolation, env controls, and `rlsdk plugins`."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pluggy
import pytest

import rlsdk
import rlsdk.kinds
from rlsdk import ConfigError, PluginError, hookspecs
from rlsdk.cli import main
from rlsdk.plugins import KINDS, Registry, get_plugin_manager, get_registry, reset_registry

ROOT = Path(__file__).resolve().parents[1]


def make_distribution(
    root: Path, dist: str, module: str, source: str, version: str = "1.2.3", ep_name: str | None = None
) -> None:
    """Lay out an installed distribution (a module plus its .dist-info) as pip would, on ``root``."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[rlsdk]\n{ep_name or module} = {module}\n")


GOOD = """
import rlsdk

class AlwaysOne:
    def __call__(self, prompts, completions, metadata):
        return [1.0 for _ in completions]

@rlsdk.hookimpl
def register_rewards(register):
    register("always_one", AlwaysOne)
"""


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    reset_registry()
    yield tmp_path
    reset_registry()
    for name in list(sys.modules):
        if name.startswith("ext_"):
            del sys.modules[name]


def test_builtins_register_every_reference_component():
    registry = get_registry()
    assert {"grpo", "dr_grpo", "rloo", "reinforce_pp"} <= set(registry.names("algorithm"))
    assert {"grpo", "rloo", "reinforce_plus_plus", "reinforce_plus_plus_baseline", "opo", "grpo_passk"} <= set(
        registry.names("advantage")
    )
    assert {"clipped_pg", "reinforce"} <= set(registry.names("loss"))
    assert {"torch", "chunked"} <= set(registry.names("logprob_backend"))
    assert {"reverse", "sort", "addition", "jsonl"} <= set(registry.names("task"))
    assert {"tiny", "hf"} <= set(registry.names("policy"))
    assert "group" in registry.names("sampler")
    assert "console" in registry.names("tracker")
    assert {"exact_match", "char_match", "format", "overlong", "length_penalty"} <= set(registry.names("reward"))
    assert all(p.distribution == "rlsdk" and p.error is None for p in registry.plugins if p.distribution == "rlsdk")
    assert registry.owner("loss", "clipped_pg") == "rlsdk:policy_gradient"


def test_create_builds_and_validates():
    adv = rlsdk.create("advantage", "grpo", eps=1e-4)
    assert rlsdk.kinds.conform("advantage", adv, "adv") is adv
    with pytest.raises(ConfigError, match="did you mean 'grpo'"):
        rlsdk.create("advantage", "grp")
    with pytest.raises(ConfigError, match="unknown option 'epss'.*did you mean 'eps'"):
        rlsdk.create("advantage", "grpo", epss=1.0)
    with pytest.raises(ConfigError, match="unknown component kind"):
        rlsdk.create("losses", "grpo")


def test_installed_plugin_is_discovered(plugin_path):
    make_distribution(plugin_path, "rlsdk-ext-good", "ext_good", GOOD)
    registry = get_registry(refresh=True)
    assert "always_one" in registry.names("reward")
    info = next(p for p in registry.plugins if p.distribution == "rlsdk-ext-good")
    assert info.version == "1.2.3" and info.registers == {"reward": ["always_one"]}
    assert info.hooks == ["register_rewards"]
    assert rlsdk.create("reward", "always_one")(["p"], ["c"], [{"answer": "a"}]) == [1.0]


def test_broken_plugin_is_reported_and_others_work(plugin_path, monkeypatch):
    make_distribution(plugin_path, "rlsdk-ext-good", "ext_good", GOOD)
    make_distribution(plugin_path, "rlsdk-ext-broken", "ext_broken", "raise ImportError('no such dependency: foo')\n")
    with pytest.warns(RuntimeWarning, match="rlsdk-ext-broken:ext_broken failed to load"):
        registry = get_registry(refresh=True)
    assert "always_one" in registry.names("reward")
    broken = next(p for p in registry.plugins if p.distribution == "rlsdk-ext-broken")
    assert "no such dependency" in broken.error
    # the failure is named when a lookup fails
    with pytest.raises(ConfigError, match="failed to load: rlsdk-ext-broken:ext_broken"):
        registry.factory("loss", "missing")
    monkeypatch.setenv("RLSDK_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="rlsdk-ext-broken:ext_broken failed to load"):
        get_registry(refresh=True)


def test_failing_registration_drops_only_that_plugin(plugin_path):
    make_distribution(
        plugin_path,
        "rlsdk-ext-half",
        "ext_half",
        """
        import rlsdk

        @rlsdk.hookimpl
        def register_rewards(register):
            register("half_one", lambda: None)
            raise RuntimeError("boom while registering")
        """,
    )
    make_distribution(plugin_path, "rlsdk-ext-good", "ext_good", GOOD)
    with pytest.warns(RuntimeWarning, match="rlsdk-ext-half:ext_half failed to register"):
        registry = get_registry(refresh=True)
    assert "half_one" not in registry.names("reward")
    assert "always_one" in registry.names("reward")


def test_misspelt_hook_is_reported(plugin_path):
    make_distribution(
        plugin_path,
        "rlsdk-ext-typo",
        "ext_typo",
        """
        import rlsdk

        @rlsdk.hookimpl
        def register_reward(register):
            register("never", object)
        """,
    )
    with pytest.warns(RuntimeWarning, match="ext_typo failed to validate"):
        registry = get_registry(refresh=True)
    assert "never" not in registry.names("reward")


BAD_REGISTRATIONS = {
    "clash": (
        'register("exact_match", object)',
        r"'exact_match' is registered by two plugins: rlsdk:rewards and rlsdk-ext-bad:ext_bad",
    ),
    "invalid name": ('register("has space", object)', r"invalid name 'has space'"),
    "name not a string": ("register(3, object)", r"invalid name 3"),
    "not callable": ('register("not_callable", 42)', r"'not_callable' with a non-callable 42"),
}


@pytest.mark.parametrize("call,message", BAD_REGISTRATIONS.values(), ids=BAD_REGISTRATIONS)
def test_bad_register_call_skips_that_plugin_only(plugin_path, monkeypatch, call, message):
    """A bad register() (clash, invalid name, non-callable) drops that plugin whole; the rest work."""
    source = f"""
        import rlsdk

        @rlsdk.hookimpl
        def register_losses(register):
            register("bad_plugin_loss", object)  # registered first, dropped with the plugin

        @rlsdk.hookimpl
        def register_rewards(register):
            {call}
        """
    make_distribution(plugin_path, "rlsdk-ext-bad", "ext_bad", source)
    make_distribution(plugin_path, "rlsdk-ext-good", "ext_good", GOOD)
    with pytest.warns(
        RuntimeWarning,
        match=r"plugin rlsdk-ext-bad:ext_bad failed to register \(register_rewards\) and is skipped.*" + message,
    ):
        registry = get_registry(refresh=True)
    assert "always_one" in registry.names("reward") and "grpo" in registry.names("algorithm")
    assert "bad_plugin_loss" not in registry.names("loss")
    assert registry.owner("reward", "exact_match") == "rlsdk:rewards"
    bad = next(p for p in registry.plugins if p.distribution == "rlsdk-ext-bad")
    assert bad.registers == {} and re.search(message, bad.error)
    assert registry.pm.get_plugin("rlsdk-ext-bad:ext_bad") is None  # nor are its event hooks called
    monkeypatch.setenv("RLSDK_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=message):
        get_registry(refresh=True)


def test_commands_work_beside_a_plugin_whose_registration_is_bad(tmp_path):
    """`rlsdk plugins` (and so every command) still runs, and shows the bad plugin's error."""
    make_distribution(
        tmp_path,
        "rlsdk-ext-bad",
        "ext_bad",
        "import rlsdk\n\n@rlsdk.hookimpl\ndef register_rewards(register):\n    register('exact_match', object)\n",
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "rlsdk.cli", "plugins", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    rows = {(r["distribution"], r["name"]): r for r in json.loads(proc.stdout)}
    assert "registered by two plugins" in rows[("rlsdk-ext-bad", "ext_bad")]["error"]
    assert (
        rows[("rlsdk", "rewards")]["error"] is None
        and "exact_match" in rows[("rlsdk", "rewards")]["registers"]["reward"]
    )
    assert "rlsdk-ext-bad:ext_bad failed to register" in proc.stderr and "Traceback" not in proc.stderr


def test_load_plugins_selects_distributions(plugin_path, monkeypatch):
    make_distribution(plugin_path, "rlsdk-ext-good", "ext_good", GOOD)
    monkeypatch.setenv("RLSDK_LOAD_PLUGINS", "")
    registry = get_registry(refresh=True)
    assert "always_one" not in registry.names("reward")
    assert "grpo" in registry.names("algorithm")  # rlsdk's own always load
    monkeypatch.setenv("RLSDK_LOAD_PLUGINS", "rlsdk-ext-good")
    assert "always_one" in get_registry(refresh=True).names("reward")
    # names compare normalised (case, '_' for '-'), and rlsdk itself may be listed
    monkeypatch.setenv("RLSDK_LOAD_PLUGINS", " rlsdk , RLSDK_ext_good ")
    assert "always_one" in get_registry(refresh=True).names("reward")


def test_load_plugins_with_a_misspelt_name_is_an_error(plugin_path, monkeypatch, capsys):
    """A misspelt distribution in RLSDK_LOAD_PLUGINS is named, with the closest installed one."""
    make_distribution(plugin_path, "rlsdk-ext-good", "ext_good", GOOD)
    make_distribution(plugin_path, "rlsdk-ext-other", "ext_other", "raise RuntimeError('must not be imported')\n")
    monkeypatch.setenv("RLSDK_LOAD_PLUGINS", "rlsdk-ext-god")
    with pytest.raises(PluginError) as info:
        get_registry(refresh=True)
    message = str(info.value)
    assert message.startswith(
        "RLSDK_LOAD_PLUGINS names 'rlsdk-ext-god', which is not an installed rlsdk plugin distribution "
        "(did you mean 'rlsdk-ext-good'?); installed: "
    ), message
    assert "rlsdk-ext-good" in message.split("installed: ")[1] and "rlsdk-ext-other" in message
    assert "ext_other" not in sys.modules  # raised before importing any plugin
    monkeypatch.setenv("RLSDK_LOAD_PLUGINS", "rlsdk-ext-good,nothing-like-it,rlsdk-ext-othr")
    with pytest.raises(
        PluginError,
        match=r"names 'nothing-like-it', 'rlsdk-ext-othr' \(did you mean 'rlsdk-ext-other'\?\), "
        r"which are not installed",
    ):
        get_registry(refresh=True)
    # the command line reports it as one line and exits with status 2
    monkeypatch.setenv("RLSDK_LOAD_PLUGINS", "rlsdk-ext-god")
    assert main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlsdk plugins: error: RLSDK_LOAD_PLUGINS names 'rlsdk-ext-god'") and err.count("\n") == 1, (
        err
    )


def test_trace_prints_hook_calls(plugin_path, monkeypatch, capsys):
    monkeypatch.setenv("RLSDK_TRACE_PLUGINS", "1")
    registry = get_registry(refresh=True)
    registry.pm.hook.on_train_end(run=None, summary={"x": 1})
    err = capsys.readouterr().err
    assert "[rlsdk trace] register_losses(register) -> rlsdk:policy_gradient" in err
    assert "[rlsdk trace] on_train_end(" in err


def test_extra_plugin_objects_and_files(tmp_path):
    class Local:
        @rlsdk.hookimpl
        def register_losses(self, register):
            register("local_loss", object)

    registry = Registry(*get_plugin_manager(load_entrypoints=False, extra=[Local()]))
    assert registry.names("loss") == ["local_loss"]
    path = tmp_path / "file_plugin.py"
    path.write_text(GOOD)
    registry = Registry(*get_plugin_manager(load_entrypoints=False, extra=[str(path)]))
    assert registry.names("reward") == ["always_one"]


BROKEN_FILES = {
    "syntax error": (
        "import rlsdk\n\ndef register_rewards(register:\n    pass\n",
        r"failed to import: SyntaxError: .* \(line 3\)$",
    ),
    "name error": (
        "import rlsdk\n\nx = 1\nfoo\n",
        r"failed to import: NameError: name 'foo' is not defined \(line 4\)$",
    ),
    "missing module": (
        "import rlsdk\nimport rlsdk_no_such_module_xyz\n",
        r"failed to import: ModuleNotFoundError: No module named 'rlsdk_no_such_module_xyz' \(line 2\)$",
    ),
    "register raises": (
        "import rlsdk\n\n@rlsdk.hookimpl\ndef register_rewards(register):\n"
        "    register('fine', object)\n    raise RuntimeError('boom')\n",
        r"failed to register \(register_rewards\): RuntimeError: boom \(line 6\)$",
    ),
    "register clashes": (
        "import rlsdk\n\n@rlsdk.hookimpl\ndef register_rewards(register):\n    register('exact_match', object)\n",
        r"failed to register \(register_rewards\): PluginError: "
        r"reward 'exact_match' is registered by two plugins.* \(line 5\)$",
    ),
    "invalid name": (
        "import rlsdk\n\n@rlsdk.hookimpl\ndef register_losses(register):\n    register('has space', object)\n",
        r"failed to register \(register_losses\): PluginError: .*invalid name 'has space'.* \(line 5\)$",
    ),
    "misspelt hook": (
        "import rlsdk\n\n@rlsdk.hookimpl\ndef register_reward(register):\n    pass\n",
        r"failed to validate \(unknown hook\): .*'register_reward'",
    ),
    "bad hook arguments": (
        "import rlsdk\n\n@rlsdk.hookimpl\ndef register_rewards(register, extra):\n    pass\n",
        r"failed to validate: PluginValidationError: .*'extra'",
    ),
}


@pytest.mark.parametrize("strict", ["0", "1"])
@pytest.mark.parametrize("source,message", BROKEN_FILES.values(), ids=BROKEN_FILES)
def test_broken_plugin_file_is_an_error(tmp_path, monkeypatch, source, message, strict):
    """A plugin file the user named is never skipped: any failure is a one-line PluginError naming it."""
    monkeypatch.setenv("RLSDK_STRICT_PLUGINS", strict)
    monkeypatch.setenv("RLSDK_LOAD_PLUGINS", "")  # rlsdk's own plugins, nothing else installed
    monkeypatch.chdir(tmp_path)
    Path("bad.py").write_text(source)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # raised, not warned
        with pytest.raises(PluginError) as info:
            Registry(*get_plugin_manager(extra=["bad.py"]))
    text = str(info.value)
    assert text.startswith("plugin file 'bad.py' failed to ") and "\n" not in text, text
    assert re.search(message, text), text


def test_plugin_file_is_imported_as_a_module(tmp_path):
    """The file's module is in sys.modules while it runs, so a dataclass with string annotations works."""
    path = tmp_path / "dc_plugin.py"
    path.write_text(
        "from __future__ import annotations\n\nimport dataclasses\nimport typing\n\nimport rlsdk\n\n\n"
        "@dataclasses.dataclass\nclass Options:\n    shared: typing.ClassVar[int] = 1\n    weight: float = 1.0\n\n\n"
        "@rlsdk.hookimpl\ndef register_rewards(register):\n    register('dc_reward', Options)\n"
    )
    registry = Registry(*get_plugin_manager(load_entrypoints=False, extra=[path]))
    assert (
        registry.names("reward") == ["dc_reward"]
        and registry.create("reward", "dc_reward", {"weight": 2.0}).weight == 2.0
    )


def test_missing_plugin_file_is_an_error(tmp_path):
    with pytest.raises(PluginError, match="plugin file '.*nope.py' does not exist"):
        get_plugin_manager(load_entrypoints=False, extra=[tmp_path / "nope.py"])


def test_broken_plugin_file_fails_the_command(tmp_path, monkeypatch, capsys):
    """`rlsdk train --plugin bad.py` stops with status 2 and one line, before any run starts."""
    monkeypatch.setenv("RLSDK_LOAD_PLUGINS", "")  # no other installed plugin's warning on stderr
    monkeypatch.chdir(tmp_path)
    Path("bad.py").write_text("import rlsdk\n\nfoo\n")
    assert main(["train", "--plugin", "bad.py", "train.steps=1", "--no-progress", "--run-dir", "run"]) == 2
    captured = capsys.readouterr()
    assert (
        captured.err
        == "rlsdk train: error: plugin file 'bad.py' failed to import: NameError: name 'foo' is not defined (line 3)\n"
    )
    assert captured.out == "" and not Path("run").exists()


def test_plugins_command_json(plugin_path, capsys):
    make_distribution(plugin_path, "rlsdk-ext-good", "ext_good", GOOD)
    reset_registry()
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_dist = {(r["distribution"], r["name"]): r for r in rows}
    assert by_dist[("rlsdk-ext-good", "ext_good")]["registers"] == {"reward": ["always_one"]}
    assert by_dist[("rlsdk", "grpo")]["registers"]["algorithm"] == ["grpo", "dr_grpo"]
    assert main(["plugins"]) == 0
    table = capsys.readouterr().out
    assert "rlsdk-ext-good" in table and "always_one" in table


def test_external_plugin_trains_from_the_command_line(tmp_path):
    """A distribution installed outside this repository is usable by name in `rlsdk train`."""
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(
        site,
        "rlsdk-ext-loss",
        "ext_loss",
        """
        import rlsdk

        class HalfReinforce:
            '''REINFORCE scaled by 1/2: L = -A * lp / 2.'''

            def __init__(self, agg: str = "token-mean"):
                self.agg = agg

            def __call__(self, logprobs, batch):
                loss = rlsdk.aggregate(-0.5 * batch.advantages * logprobs, batch, self.agg)
                return rlsdk.LossOutput(loss, {"pg_loss": float(loss.detach())})

        @rlsdk.hookimpl
        def register_losses(register):
            register("half_reinforce", HalfReinforce)
        """,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    cmd = [
        sys.executable,
        "-m",
        "rlsdk.cli",
        "train",
        "loss.name=half_reinforce",
        "train.steps=2",
        "run.plot=false",
        "--no-progress",
        "--run-dir",
        str(tmp_path / "run"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    # metrics are normalised by global counts, so they add up over micro-batches like the loss
    assert all(r["loss/pg_loss"] == pytest.approx(r["loss"]) for r in rows)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert any(p["distribution"] == "rlsdk-ext-loss" for p in manifest["plugins"])


def test_every_hook_is_documented():
    """Each hookspec has a docstring whose Args cover its arguments, and the plugin guide names it."""
    guide = (ROOT / "docs" / "plugins.md").read_text()
    specs = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "rlsdk_spec")]
    assert set(KINDS.values()) <= set(specs)
    for name in specs:
        fn = getattr(hookspecs, name)
        doc = inspect.getdoc(fn) or ""
        assert doc, f"hook {name} has no docstring"
        for arg in inspect.signature(fn).parameters:
            assert f"{arg}:" in doc.split("Args:")[-1], f"hook {name}: argument {arg!r} is undocumented"
        assert f"`{name}`" in guide, f"hook {name} is missing from docs/plugins.md"


def test_pluggy_project_name_matches():
    assert rlsdk.hookimpl.project_name == "rlsdk"
    pm, _ = get_plugin_manager(load_entrypoints=False)
    assert isinstance(pm, pluggy.PluginManager) and pm.project_name == "rlsdk"


def test_extra_plugin_already_loaded_by_entry_point_is_not_registered_twice():
    import rlsdk_plugins.grpo

    registry = Registry(*get_plugin_manager(extra=[rlsdk_plugins.grpo]))
    assert registry.owner("advantage", "grpo") == "rlsdk:grpo"
