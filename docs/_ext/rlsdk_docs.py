"""Sphinx directives that generate rlsdk's hook and CLI references from the code itself.

- ``.. rlsdk-hooks:: registration`` / ``check`` / ``event`` emit, for every hook spec in
  :mod:`rlsdk.hookspecs` of that group, a ``hook`` target and an ``autofunction``; a new hook appears
  without editing the docs, and a hook that fits neither group fails the build.
- ``.. rlsdk-kinds::`` renders the table of component kinds (:data:`rlsdk.kinds.KINDS`).
- ``.. rlsdk-cli::`` renders ``rlsdk --help`` and the help of every subcommand of
  :func:`rlsdk.cli.build_parser` (so the CLI reference cannot drift from the parser).

The extension also registers the ``hook`` cross-reference type (``:hook:`register_losses```).
"""

from __future__ import annotations

import argparse
import inspect
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import make_refnode, nested_parse_with_titles

HOOK_GROUPS = ("registration", "check", "event")
HELP_WIDTH = 90


# --------------------------------------------------------------------------------------------------
# Hooks


def hook_specs() -> list[tuple[str, Any]]:
    """``(name, function)`` of every hook spec in :mod:`rlsdk.hookspecs`, in source order."""
    from rlsdk import hookspecs

    specs = [(name, fn) for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "rlsdk_spec")]
    from rlsdk.kinds import KINDS

    order = {spec.hook: i for i, spec in enumerate(KINDS.values())}  # the registration hooks share one source line
    return sorted(specs, key=lambda item: (inspect.getsourcelines(item[1])[1], order.get(item[0], 0)))


class KindsDirective(SphinxDirective):
    """``.. rlsdk-kinds::``: the table of component kinds (:data:`rlsdk.kinds.KINDS`) as a list table."""

    def run(self) -> list[nodes.Node]:
        from rlsdk.kinds import KINDS

        self.env.note_reread()
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 12 22 16 18 32", ""]
        lines += ["   * - kind", "     - registered with", "     - config section", "     - protocol", "     - members"]
        for spec in KINDS.values():
            members = [f"``{m}``" for m in spec.required] + [f"``{m}`` (optional)" for m in spec.optional]
            protocol = f":class:`rlsdk.{spec.protocol}`" if spec.protocol else "none (a dict of sections)"
            check = f"; checked by :func:`rlsdk.testing.{spec.check}`" if spec.check else ""
            lines += [
                f"   * - ``{spec.name}``",
                f"     - :hook:`{spec.hook}`",
                f"     - ``{spec.section}`` ({spec.shape})",
                f"     - {protocol}",
                f"     - {', '.join(members) or 'its call'}{check}",
            ]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="rlsdk.kinds"), self.content_offset, container)
        return container.children


def hook_group(name: str) -> str:
    """``registration`` for ``register_*`` hooks, ``check`` for ``check_*`` hooks, ``event`` for ``on_*`` hooks."""
    if name.startswith("register_"):
        return "registration"
    if name.startswith("on_"):
        return "event"
    if name.startswith("check_"):
        return "check"
    raise ValueError(f"hook {name!r} is neither register_*, check_* nor on_*; add its group to docs/_ext/rlsdk_docs.py")


class HooksDirective(SphinxDirective):
    """``.. rlsdk-hooks:: GROUP``: document every hook spec of GROUP (registration, check or event)."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        self.env.note_reread()  # generated from the code: rebuild the page on every build
        group = self.arguments[0]
        if group not in HOOK_GROUPS:
            raise self.error(f"rlsdk-hooks: unknown group {group!r}; valid: {', '.join(HOOK_GROUPS)}")
        lines: list[str] = []
        for name, _ in hook_specs():
            try:
                in_group = hook_group(name) == group
            except ValueError as exc:
                raise self.error(str(exc)) from exc
            if in_group:
                lines += [f".. hook:: {name}", "", f".. autofunction:: rlsdk.hookspecs.{name}", ""]
        if not lines:
            raise self.error(f"rlsdk-hooks: no {group} hooks found in rlsdk.hookspecs")
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="rlsdk.hookspecs"), self.content_offset, container)
        return container.children


# --------------------------------------------------------------------------------------------------
# CLI


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers of ``parser``, by name, in the order they were added."""
    for action in parser._actions:  # argparse offers no public accessor for subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def help_text(parser: argparse.ArgumentParser) -> str:
    """``parser.format_help()`` at a fixed width, whatever the terminal (so the build is reproducible)."""
    formatter_class = parser.formatter_class
    parser.formatter_class = lambda prog: formatter_class(prog, width=HELP_WIDTH)  # type: ignore[misc]
    try:
        return parser.format_help()
    finally:
        parser.formatter_class = formatter_class


class CliDirective(SphinxDirective):
    """``.. rlsdk-cli::``: ``rlsdk --help`` and a section per subcommand with its ``--help``."""

    def run(self) -> list[nodes.Node]:
        from rlsdk.cli import build_parser

        self.env.note_reread()  # generated from the code: rebuild the page on every build
        parser = build_parser()
        lines = ["``rlsdk --help``:", "", ".. code-block:: text", ""]
        lines += ["   " + line for line in help_text(parser).splitlines()]
        lines.append("")
        for name, sub in subcommands(parser).items():
            title = f"rlsdk {name}"
            lines += [f".. _cli-{name}:", "", title, "-" * len(title), ""]
            lines += [".. code-block:: text", ""]
            lines += ["   " + line for line in help_text(sub).splitlines()]
            lines.append("")
        container = nodes.section()
        container.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source="rlsdk.cli"), container)
        return container.children


# --------------------------------------------------------------------------------------------------
# Signatures and short names in docstrings


def factory_defaults(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, signature: str | None, return_annotation: str | None
) -> tuple[str | None, str | None] | None:
    """Clean two signatures autodoc gets wrong.

    - A dataclass ``field(default_factory=...)`` default shows as ``...`` instead of ``<factory>``,
      which is not Python, so Sphinx could not parse the signature and would split it at every comma.
    - A ``Protocol`` shows no ``(*args, **kwargs)``: protocols are not instantiated.
    """
    if what == "class" and getattr(obj, "_is_protocol", False):
        return "", return_annotation
    if signature and "<factory>" in signature:
        return signature.replace("<factory>", "..."), return_annotation
    return None


def resolve_short_name(app: Sphinx, env: Any, node: Any, contnode: nodes.Element) -> nodes.Element | None:
    """Resolve ``:class:`ConfigError``` in an rlsdk docstring to the one rlsdk object of that name.

    Docstrings name their module's neighbours as the code does (``DEFAULTS``, ``ConfigError``), but a
    re-exported object is documented under :mod:`rlsdk`, where those short names do not resolve. As
    a fallback (after Sphinx's own lookup failed), a reference made from ``rlsdk.*`` documentation
    resolves to the unique documented ``rlsdk.*`` object ending in ``.<name>``; anything ambiguous or
    unknown stays unresolved and fails the nitpicky build.
    """
    if node.get("refdomain") != "py" or not str(node.get("py:module") or "").startswith("rlsdk"):
        return None
    domain = env.get_domain("py")
    matches = domain.find_obj(env, None, None, node["reftarget"], node["reftype"], 1)
    found = {obj.node_id: (name, obj) for name, obj in matches if name.startswith("rlsdk.") and not obj.aliased}
    if len(found) != 1:
        return None
    name, obj = next(iter(found.values()))
    return make_refnode(app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, name)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the ``hook`` cross-reference type and the two directives."""
    app.add_crossref_type("hook", "hook", indextemplate="pair: %s; hook")
    app.add_directive("rlsdk-hooks", HooksDirective)
    app.add_directive("rlsdk-kinds", KindsDirective)
    app.add_directive("rlsdk-cli", CliDirective)
    app.connect("missing-reference", resolve_short_name)
    app.connect("autodoc-process-signature", factory_defaults)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
