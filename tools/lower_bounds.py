"""Print a pip constraints file that pins each requirement of pyproject.toml to its lower bound.

``python tools/lower_bounds.py [EXTRA ...]`` covers the core's requirements and those of the named
extras (default: ``test docs``, what the README installs). ``.ci/run`` installs that set with
``pip install -c FILE -e '.[test,docs]'`` and runs the fast tests on it, so a declared range is a
tested range: a requirement without a lower bound is an error here.
"""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def lower_bounds(extras: list[str]) -> list[str]:
    """``name==X`` (markers kept) for the lowest version each requirement admits, one line per name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    lines = list(project["dependencies"])
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"lower_bounds.py: unknown extra {extra!r}; pyproject.toml declares {', '.join(optional)}")
        lines += optional[extra]
    out: dict[str, str] = {}
    for req in map(Requirement, lines):
        lows = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
        if not lows:
            raise SystemExit(f"lower_bounds.py: {req} in pyproject.toml has no lower bound; give it one (>=X)")
        marker = f"; {req.marker}" if req.marker else ""
        out.setdefault(req.name.lower(), f"{req.name}=={max(lows)}{marker}")
    return list(out.values())


if __name__ == "__main__":
    print("\n".join(lower_bounds(sys.argv[1:] or ["test", "docs"])))
