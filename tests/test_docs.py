"""The docs stay true to the code: generated pages are current, links resolve, README commands exist."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_components_page_is_current():
    render = runpy.run_path(str(ROOT / "tools" / "gen_components.py"))["render"]
    assert (ROOT / "docs" / "components.md").read_text() == render(), "run: python tools/gen_components.py"


def test_markdown_links_resolve():
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_readme_shows_install_and_test_commands():
    """The README's two commands, and .ci/run installs exactly the README's install (CI tests what users get)."""
    import shlex

    readme = (ROOT / "README.md").read_text()
    install = re.search(r"^pip install (.*-e '\.\[test,docs\]') && rlsdk train$", readme, re.M)
    assert install and re.search(r"^pytest$", readme, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    ci_install = re.search(r"^readme_install=\((.*)\)$", ci, re.M)
    assert ci_install and shlex.split(ci_install.group(1)) == shlex.split(install.group(1))
    assert 'pip_install "${readme_install[@]}"' in ci and "python -m pytest -q -p no:cacheprovider\n" in ci


def test_every_config_default_is_documented():
    from rlsdk.config import DEFAULTS

    page = (ROOT / "docs" / "configuration.md").read_text()
    for section in ("train", "eval", "run"):
        for key in DEFAULTS[section]:
            assert f"`{section}.{key}`" in page, f"{section}.{key} is missing from docs/configuration.md"
