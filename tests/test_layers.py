"""The layers of the code (docs/architecture.md), checked on the import graph.

The graph is read from the source with ``ast``, so no module is imported: every ``import`` and
``from ... import`` counts, at module level and inside functions (a lazy import is still a
dependency), and so does ``importlib.import_module("literal")``. ``from x import y`` where ``x.y`` is a
module is an import of ``x.y``; ``import rlsdk`` and ``from rlsdk import Name`` are imports of the
facade (``rlsdk/__init__.py``). Imports under ``if TYPE_CHECKING:`` count for the layers but not for
cycles (they never run).

What is checked:

- every module of ``sdk/rlsdk`` is in exactly one layer of :data:`LAYERS` (a new module must be placed);
- no module imports a module of a higher layer;
- no import cycles among the modules of rlsdk, rlsdk_plugins and rlsdk_kernels;
- the core (``sdk/rlsdk``) never imports ``rlsdk_plugins`` or ``rlsdk_kernels``;
- the kernel op modules import neither ``rlsdk_plugins``, the kernels' ``plugin.py``, nor another op
  module's private (``_``) names;
- the plugin packages import rlsdk only through its public modules and names (no ``_`` part).
"""

from __future__ import annotations

import ast
import fnmatch
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "rlsdk": ROOT / "sdk" / "rlsdk",
    "rlsdk_plugins": ROOT / "plugins" / "rlsdk_plugins",
    "rlsdk_kernels": ROOT / "kernels" / "rlsdk_kernels",
}
#: Folders of sdk/rlsdk that hold no Python modules of the package (the plugin template is Jinja).
SKIPPED = {"_template"}

#: The layers of the core, lowest first. A module may import modules of its own layer and of the
#: layers below. A pattern is a module name, or ``package.*`` for the modules below ``package``.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # errors, the table of kinds, the batch types and protocols (with RunContext), the hook specs,
    # the validators, the tensor functions every component shares, the checks of component outputs
    (
        "contract",
        (
            "rlsdk._version",
            "rlsdk.errors",
            "rlsdk.validation",
            "rlsdk.types",
            "rlsdk.kinds",
            "rlsdk.hookspecs",
            "rlsdk.functional",
            "rlsdk.checks",
        ),
    ),
    # seeds, manifests, lock files, run folders: on the contract alone (the trainer writes them)
    ("provenance", ("rlsdk.provenance", "rlsdk.provenance.*")),
    # the registry, settings and config, the progress bar, the reward plot a run draws at its end
    ("machinery", ("rlsdk.plugins", "rlsdk.settings", "rlsdk.config", "rlsdk.progress", "rlsdk.plotting")),
    ("trainer", ("rlsdk.trainer",)),
    # experiments, comparisons, sweeps, reports, reproduce: they read run folders and call the trainer
    ("research", ("rlsdk.research", "rlsdk.research.*")),
    # the command line, the plugin scaffold, the plugin authors' test kit
    ("tools", ("rlsdk.cli", "rlsdk.scaffold", "rlsdk.testing", "rlsdk.testing.*")),
    # rlsdk/__init__.py: the public names; no module of the core imports it
    ("facade", ("rlsdk",)),
]

#: The kernels' components module: the one module of rlsdk_kernels that knows components.
KERNEL_COMPONENTS = "rlsdk_kernels.plugin"


@dataclass(frozen=True)
class Import:
    """One import statement's target, as seen in ``source``."""

    source: str
    target: str  # a module of the three packages, the longest prefix that is one
    line: int
    runtime: bool  # False under ``if TYPE_CHECKING:``
    names: tuple[str, ...] = ()  # the names of ``from target import ...`` that are not modules


def _module_files() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if SKIPPED & set(parts[:-1]):
                continue
            name = ".".join((package, *parts))
            modules[name.removesuffix(".__init__")] = path
    return modules


MODULES = _module_files()


def _known(name: str) -> str | None:
    """The longest prefix of the dotted ``name`` that is one of the modules, or None (outside the packages)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Reader(ast.NodeVisitor):
    """Collects the imports of one module and its uses of private attributes of imported modules."""

    def __init__(self, module: str, path: Path):
        self.module, self.path = module, path
        self.package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        self.imports: list[Import] = []
        self.aliases: dict[str, str] = {}  # local name -> the module it is bound to
        self.attributes: list[tuple[str, int]] = []  # dotted module attributes used: ("rlsdk.x._y", line)
        self._type_checking = 0

    def _add(self, target: str | None, node: ast.AST, names: tuple[str, ...] = ()) -> None:
        known = _known(target) if target else None
        if known is not None and known != self.module:
            self.imports.append(Import(self.module, known, node.lineno, not self._type_checking, names))

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._type_checking += 1
            for child in node.body:
                self.visit(child)
            self._type_checking -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                root = alias.name.split(".")[0]
                self.aliases[root] = root

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base_parts = self.package.split(".")
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        plain: list[str] = []
        for alias in node.names:
            full = f"{base}.{alias.name}"
            if full in MODULES:
                self._add(full, node)
                self.aliases[alias.asname or alias.name] = full
            else:
                plain.append(alias.name)
        if plain:
            self._add(base, node, tuple(plain))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
            if isinstance(node.args[0].value, str):
                self._add(node.args[0].value, node)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain: list[str] = []
        value: ast.expr = node
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if isinstance(value, ast.Name) and value.id in self.aliases:
            self.attributes.append((".".join([self.aliases[value.id], *reversed(chain)]), node.lineno))
            return  # the inner attributes are part of this chain
        self.generic_visit(node)


def _read(module: str) -> _Reader:
    reader = _Reader(module, MODULES[module])
    reader.visit(ast.parse(MODULES[module].read_text(encoding="utf-8"), filename=str(MODULES[module])))
    return reader


READERS = {module: _read(module) for module in MODULES}
IMPORTS = [imp for reader in READERS.values() for imp in reader.imports]
CORE = sorted(m for m in MODULES if m.split(".")[0] == "rlsdk")
PLUGIN_MODULES = sorted(m for m in MODULES if m.split(".")[0] in ("rlsdk_plugins", "rlsdk_kernels"))
KERNEL_OPS = sorted(
    m
    for m in MODULES
    if m.startswith("rlsdk_kernels.") and m != KERNEL_COMPONENTS and not m.rpartition(".")[2].startswith("_")
)


def _where(imp: Import) -> str:
    return f"{MODULES[imp.source].relative_to(ROOT)}:{imp.line}"


def _layers_of(module: str) -> list[int]:
    return [i for i, (_, patterns) in enumerate(LAYERS) if any(fnmatch.fnmatchcase(module, p) for p in patterns)]


def _layer(module: str) -> int:
    (index,) = _layers_of(module)
    return index


def _private(dotted: str, start: int) -> bool:
    """Whether a part of ``dotted`` from ``start`` on is private (``_x``, not a dunder)."""
    return any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in dotted.split(".")[start:])


# --------------------------------------------------------------------------------------------------
# The graph reader itself


def test_the_reader_sees_every_kind_of_import():
    tree = ast.parse(
        "import rlsdk\nfrom rlsdk import ConfigError, hookspecs\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from rlsdk.trainer import Run\n"
        "def f():\n    from .rewards import x\n    import importlib\n    importlib.import_module('rlsdk.cli')\n"
        "    return rlsdk.testing._builders, hookspecs._x\n"
    )
    reader = _Reader("rlsdk_plugins.grpo", MODULES["rlsdk_plugins.grpo"])
    reader.visit(tree)
    seen = {(i.target, i.runtime, i.names) for i in reader.imports}
    assert seen == {
        ("rlsdk", True, ()),
        ("rlsdk", True, ("ConfigError",)),
        ("rlsdk.hookspecs", True, ()),
        ("rlsdk.trainer", False, ("Run",)),
        ("rlsdk_plugins.rewards", True, ("x",)),
        ("rlsdk.cli", True, ()),
    }
    assert {a for a, _ in reader.attributes} >= {"rlsdk.testing._builders", "rlsdk.hookspecs._x"}


# --------------------------------------------------------------------------------------------------
# The core's layers


def test_every_core_module_is_in_exactly_one_layer():
    unplaced = [m for m in CORE if not _layers_of(m)]
    twice = {m: [LAYERS[i][0] for i in _layers_of(m)] for m in CORE if len(_layers_of(m)) > 1}
    assert not unplaced, f"modules in no layer (add each to LAYERS in {Path(__file__).name}): {unplaced}"
    assert not twice, f"modules in more than one layer: {twice}"
    stale = [p for _, patterns in LAYERS for p in patterns if not any(fnmatch.fnmatchcase(m, p) for m in CORE)]
    assert not stale, f"LAYERS names modules that do not exist: {stale}"


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for imp in IMPORTS:
        if imp.source not in CORE or imp.target not in CORE or _layer(imp.target) <= _layer(imp.source):
            continue
        what = "the facade (import from the defining module instead)" if imp.target == "rlsdk" else imp.target
        upward.append(
            f"{_where(imp)}: {imp.source} ({LAYERS[_layer(imp.source)][0]}) imports {what} "
            f"({LAYERS[_layer(imp.target)][0]})"
        )
    assert not upward, "imports from a higher layer:\n  " + "\n  ".join(upward)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path back to its start) for each strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan; the graph is small, the recursion shallow
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges.get(node, ())):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    cycles = []
    for component in components:  # a shortest path from the first module back to itself, within the component
        start, members = component[0], set(component)
        paths, seen = [[start]], {start}
        while paths:
            path = paths.pop(0)
            succs = sorted(edges.get(path[-1], set()) & members)
            if start in succs:
                cycles.append([*path, start])
                break
            for succ in succs:
                if succ not in seen:
                    seen.add(succ)
                    paths.append([*path, succ])
    return cycles


def test_the_cycle_finder_reports_a_path():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _cycle_report(package: str) -> list[str]:
    edges: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], str] = {}
    for imp in IMPORTS:
        if imp.runtime:
            edges.setdefault(imp.source, set()).add(imp.target)
            lines.setdefault((imp.source, imp.target), _where(imp))
    return [
        " -> ".join(cycle) + "  (" + ", ".join(lines[a, b] for a, b in zip(cycle, cycle[1:])) + ")"
        for cycle in _cycles(edges)
        if cycle[0].split(".")[0] == package
    ]


@pytest.mark.parametrize("package", ["rlsdk", "rlsdk_plugins", "rlsdk_kernels"])
def test_no_import_cycles(package):
    cycles = _cycle_report(package)
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_the_core_never_imports_the_plugin_packages():
    found = [
        f"{_where(imp)}: {imp.source} imports {imp.target}"
        for imp in IMPORTS
        if imp.source in CORE and imp.target.split(".")[0] in ("rlsdk_plugins", "rlsdk_kernels")
    ]
    assert not found, "the core imports a plugin package (reach components through the registry):\n  " + "\n  ".join(
        found
    )


# --------------------------------------------------------------------------------------------------
# The plugin packages


def test_the_kernel_op_modules_are_leaves():
    assert KERNEL_OPS, "no kernel op modules found"
    found = []
    for imp in IMPORTS:
        if imp.source not in KERNEL_OPS:
            continue
        if imp.target.split(".")[0] == "rlsdk_plugins":
            found.append(f"{_where(imp)}: {imp.source} imports {imp.target} (ops know no component)")
        elif imp.target == KERNEL_COMPONENTS:
            found.append(f"{_where(imp)}: {imp.source} imports {imp.target} (the components sit above the ops)")
        elif imp.target in KERNEL_OPS:
            found += [
                f"{_where(imp)}: {imp.source} imports the private {imp.target}.{name}"
                for name in imp.names
                if _private(name, 0)
            ]
    for module in KERNEL_OPS:
        for dotted, line in READERS[module].attributes:
            other = _known(dotted)
            if other in KERNEL_OPS and other != module and _private(dotted, len(other.split("."))):
                found.append(f"{MODULES[module].relative_to(ROOT)}:{line}: {module} uses the private {dotted}")
    assert not found, "kernel op modules reach beyond their leaf:\n  " + "\n  ".join(found)


def test_no_kernel_helper_imports_the_reference_plugins():
    # Of rlsdk_kernels, only the components (plugin.py) may build on the reference components.
    found = [
        f"{_where(imp)}: {imp.source} imports {imp.target}"
        for imp in IMPORTS
        if imp.source.startswith("rlsdk_kernels") and imp.source != KERNEL_COMPONENTS
        if imp.target.split(".")[0] == "rlsdk_plugins"
    ]
    assert not found, "\n  ".join(found)


def test_the_plugins_use_only_public_modules_and_names_of_rlsdk():
    found = []
    for imp in IMPORTS:
        if imp.source not in PLUGIN_MODULES or imp.target.split(".")[0] != "rlsdk":
            continue
        if _private(imp.target, 1):
            found.append(f"{_where(imp)}: {imp.source} imports the private module {imp.target}")
        found += [
            f"{_where(imp)}: {imp.source} imports the private {imp.target}.{name}"
            for name in imp.names
            if _private(name, 0)
        ]
    for module in PLUGIN_MODULES:
        for dotted, line in READERS[module].attributes:
            if dotted.split(".")[0] == "rlsdk" and _private(dotted, 1):
                found.append(f"{MODULES[module].relative_to(ROOT)}:{line}: {module} uses the private {dotted}")
    assert not found, "plugins reach into rlsdk's private parts:\n  " + "\n  ".join(found)
