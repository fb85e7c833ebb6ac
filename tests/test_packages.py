"""Lock files and package versions: ``rlsdk.provenance.packages`` and ``rlsdk env``."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlsdk.cli import main
from rlsdk.errors import ConfigError
from rlsdk.provenance.packages import PackageDifference, differences, installed_packages, lock_text, read_lock

ROOT = Path(__file__).resolve().parents[1]


def test_installed_packages_are_normalised_and_match_metadata():
    packages = installed_packages()
    assert packages["numpy"] == importlib.metadata.version("numpy")
    assert packages["pyyaml"] == importlib.metadata.version("PyYAML")  # PEP 503 names: lower case
    assert list(packages) == sorted(packages) and "rlsdk" in packages


def test_rlsdk_version_is_the_one_in_pyproject():
    import re

    import rlsdk

    (version,) = re.findall(r'^version = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    assert rlsdk.__version__ == version


def test_lock_round_trip_and_local_labels(tmp_path):
    text = lock_text(
        {"torch": "2.13.0+cpu", "Foo_Bar": "1.0", "pip": "26.0", "rlsdk": "0.1.0"}, header="made here\nline two"
    )
    assert text == "# made here\n# line two\nFoo_Bar==1.0\ntorch==2.13.0\n"  # pip and rlsdk left out
    path = tmp_path / "lock.txt"
    path.write_text(
        text
        + "\n  # a comment\nextra-pkg==2.0 ; python_version < '3'  # never here\nmarked==3.0; python_version >= '3'\n"
    )
    assert read_lock(path) == {"foo-bar": "1.0", "torch": "2.13.0", "marked": "3.0"}


def test_differences_compare_public_versions_like_pip():
    wanted = {"torch": "2.13.0", "numpy": "2.0.0", "gone": "1.0", "exact": "1.0+cu121"}
    installed = {"torch": "2.13.0+cpu", "numpy": "2.4.6", "exact": "1.0+cpu", "new": "0.1"}
    assert differences(wanted, installed) == [
        PackageDifference("exact", "1.0+cu121", "1.0+cpu"),  # a local label in the pin must match
        PackageDifference("gone", "1.0", None),
        PackageDifference("numpy", "2.0.0", "2.4.6"),
    ]
    assert PackageDifference("new", None, "0.1") in differences(wanted, installed, extras=True)
    assert differences({}, {"pip": "26.0", "rlsdk": "0.1.0"}, extras=True) == []  # never locked
    assert [str(d) for d in differences(wanted, installed, extras=True)] == [
        "exact: 1.0+cpu installed, wanted 1.0+cu121", "gone: not installed (wanted 1.0)",
        "new: 0.1 installed, not in the lock", "numpy: 2.4.6 installed, wanted 2.0.0",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "line,message",
    [
        ("numpy>=1.0", r"lock.txt:2: 'numpy>=1.0' is not an exact pin"),
        ("x==1; nonsense here", r"lock.txt:2: invalid environment marker"),
    ],
)
def test_bad_lock_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "lock.txt"
    path.write_text(f"ok==1\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        read_lock(path)


def test_read_lock_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; write one with `rlsdk env > FILE`"):
        read_lock(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="a folder without manifest.json"):
        read_lock(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"versions": {}}))
    with pytest.raises(ConfigError, match="records no packages"):
        read_lock(tmp_path)


def test_env_command_writes_checks_and_reads_runs(tmp_path, capsys):
    assert main(["env"]) == 0
    lock = tmp_path / "lock.txt"
    lock.write_text(capsys.readouterr().out)
    assert read_lock(lock)["numpy"] == importlib.metadata.version("numpy")
    assert main(["env", "--check", str(lock)]) == 0
    assert "every package of" in capsys.readouterr().out
    lock.write_text(
        lock.read_text().replace(f"numpy=={importlib.metadata.version('numpy')}", "numpy==0.0.1")
        + "not-a-real-package==1.0\n"
    )
    assert main(["env", "--check", str(lock)]) == 1
    out = capsys.readouterr().out
    assert f"numpy: {importlib.metadata.version('numpy')} installed, wanted 0.0.1" in out
    assert "not-a-real-package: not installed (wanted 1.0)" in out and "pip install -c" in out
    assert main(["env", "--check", str(lock), "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert {"name": "numpy", "wanted": "0.0.1", "installed": importlib.metadata.version("numpy")} in rows
    # a run folder is a lock: its manifest's packages
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"packages": {**installed_packages(), "pip": "0.1", "scipy": "0.1"}}))
    assert main(["env", "--check", str(run)]) == 1  # pip is the installer: not compared
    out = capsys.readouterr().out
    assert "1 package(s) differ" in out and "scipy:" in out and f"rlsdk env {run} > lock.txt" in out
    assert main(["env", str(run)]) == 0
    assert "scipy==0.1" in capsys.readouterr().out
    assert main(["env", str(run), "--check", str(lock)]) == 2  # one or the other
    assert "not both" in capsys.readouterr().err


def test_repository_lock_is_an_exact_lock_of_every_requirement():
    """requirements/lock.txt pins every package the README's install brings, rlsdk's own excluded."""
    pins = read_lock(ROOT / "requirements" / "lock.txt")
    for name in (
        "torch",
        "numpy",
        "scipy",
        "pytest",
        "hypothesis",
        "transformers",
        "optuna",
        "sphinx",
        "omegaconf",
        "pluggy",
    ):
        assert name in pins, name
    assert "rlsdk" not in pins and "pip" not in pins


def test_lower_bounds_pin_every_declared_requirement():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "lower_bounds.py"), "test", "docs"],
        capture_output=True,
        text=True,
        check=True,
    )
    pins = proc.stdout.splitlines()
    assert "torch==2.4" in pins and any(p.startswith("triton==") and "platform_system" in p for p in pins)
    assert all("==" in p for p in pins) and len({p.split("==")[0].lower() for p in pins}) == len(pins)
