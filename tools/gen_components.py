"""Write docs/components.md from the registry: every built-in component, its options and defaults.

Run ``python tools/gen_components.py`` after changing a component; ``tests/test_docs.py`` fails when
the page is out of date.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from rlsdk.plugins import KINDS, Registry, get_plugin_manager

HEADER = """# Components

Every component that ships with rlsdk, by kind, with its options (the keyword arguments of its
factory, i.e. the keys of its config section) and their defaults; for an algorithm, the config
sections its preset sets. Generated from the registry by
`tools/gen_components.py`; the full formulas and sources are in each class's docstring.
"""


def _options(factory) -> str:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return ""
    return ", ".join(
        f"`{p.name}={p.default!r}`" if p.default is not inspect.Parameter.empty else f"`{p.name}`" for p in params
    )


def _preset(sections: dict) -> str:
    parts = []
    for section, spec in sections.items():
        spec = dict(spec)
        name = spec.pop("name", "")
        args = ", ".join(f"{k}={v!r}" for k, v in spec.items())
        parts.append(f"`{section}: {name}({args})`")
    return "; ".join(parts)


def render() -> str:
    """The markdown page for the components of the ``rlsdk`` distribution."""
    pm, infos = get_plugin_manager()
    registry = Registry(pm, infos)
    lines = [HEADER]
    for kind in KINDS:
        names = [n for n in registry.names(kind) if registry.owner(kind, n).startswith("rlsdk:")]
        if not names:
            continue
        lines += [f"\n## `{kind}`\n", "| name | plugin | options | summary |", "|---|---|---|---|"]
        for name in names:
            factory = registry.factory(kind, name)
            doc = (inspect.getdoc(factory) or "").split("\n\n")[0].replace("\n", " ").replace("|", "\\|")
            options = _preset(factory()) if kind == "algorithm" else (_options(factory) or "(none)")
            options = options.replace("|", "\\|")
            lines.append(f"| `{name}` | `{registry.owner(kind, name)}` | {options} | {doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    target = Path(__file__).resolve().parents[1] / "docs" / "components.md"
    target.write_text(render())
    print(f"wrote {target}", file=sys.stderr)
