"""Plugin discovery and the component registry.

Plugins are modules (or any namespace) with :data:`rlsdk.hookimpl` functions. Installed plugins are
found through entry points in the group ``rlsdk``; each entry point is loaded on its own, so one
broken installed plugin is reported by name (a warning, and its ``error`` in ``rlsdk plugins``)
while the others keep working.

A plugin file the user names (``--plugin FILE``, a path in ``extra``) is not optional: if it fails
to import, names a hook that does not exist, or its registration hook raises or registers badly,
that is a :class:`~rlsdk.errors.PluginError` naming the file (and the line in it, when known),
whatever ``RLSDK_STRICT_PLUGINS`` says.

Environment variables:

- ``RLSDK_LOAD_PLUGINS``: unset loads every installed plugin; ``""`` loads only rlsdk's own;
  ``"a,b"`` loads rlsdk's own plus the distributions ``a`` and ``b``. A name that is not an
  installed distribution with an ``rlsdk`` entry point is a :class:`~rlsdk.errors.PluginError`
  (a misspelt name would otherwise drop that plugin silently).
- ``RLSDK_STRICT_PLUGINS=1``: an installed plugin that fails to import, validate or register
  raises instead of warning.
- ``RLSDK_TRACE_PLUGINS=1``: print every hook call (arguments and results) to stderr.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from rlsdk import hookspecs
from rlsdk.errors import ConfigError, PluginError, did_you_mean, guard
from rlsdk.kinds import KINDS as _KINDS
from rlsdk.kinds import conform
from rlsdk.kinds import kind as _kind

__all__ = [
    "ENTRY_POINT_GROUP",
    "KINDS",
    "PluginInfo",
    "Registry",
    "get_plugin_manager",
    "get_registry",
    "reset_registry",
    "create",
]

ENTRY_POINT_GROUP = "rlsdk"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
CORE_DISTRIBUTION = "rlsdk"

#: component kind -> registration hook (derived from :data:`rlsdk.kinds.KINDS`)
KINDS: dict[str, str] = {name: spec.hook for name, spec in _KINDS.items()}


@dataclass
class PluginInfo:
    """What ``rlsdk plugins`` shows about one plugin.

    Attributes:
        name: The plugin's name (its entry-point name, or the module/file name for extra plugins).
        distribution: The installed distribution that declares it (None for extra plugins).
        version: That distribution's version.
        module: The imported module.
        hooks: Hooks it implements.
        registers: kind -> names it registered.
        error: Why it failed to load or register, or None.
        file: The ``.py`` file it was loaded from (``--plugin FILE``), or None. A failure of such a
            plugin raises :class:`PluginError` instead of being skipped.
    """

    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    hooks: list[str] = field(default_factory=list)
    registers: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    file: str | None = None

    @property
    def label(self) -> str:
        """``distribution:name`` (or just ``name``) for messages."""
        return f"{self.distribution}:{self.name}" if self.distribution else self.name

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "hooks": self.hooks,
            "registers": self.registers,
            "error": self.error,
        }


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _normalise(distribution: str) -> str:
    return distribution.strip().lower().replace("_", "-")


def _load_filter() -> dict[str, str] | None:
    """``RLSDK_LOAD_PLUGINS`` as normalised name -> the name as written, or None when unset."""
    raw = os.environ.get("RLSDK_LOAD_PLUGINS")
    if raw is None:
        return None
    return {_normalise(part): part.strip() for part in raw.split(",") if part.strip()}


def _check_load_filter(wanted: dict[str, str], installed: dict[str, str]) -> None:
    """Raise :class:`PluginError` for a name in ``RLSDK_LOAD_PLUGINS`` that no installed plugin has.

    Args:
        wanted: Normalised name -> name as written (from :func:`_load_filter`).
        installed: Normalised name -> distribution name, of the distributions with an entry point
            in the ``rlsdk`` group.
    """
    unknown = [name for name in wanted if name != CORE_DISTRIBUTION and name not in installed]
    if not unknown:
        return
    choices = [key for key in installed if key != CORE_DISTRIBUTION]
    listed = ", ".join(sorted(installed[key] for key in choices)) or "(none besides rlsdk)"
    if len(unknown) == 1:
        name = unknown[0]
        named = f"{wanted[name]!r}, which is not an installed rlsdk plugin distribution{did_you_mean(name, choices)}"
    else:
        each = ", ".join(f"{wanted[name]!r}{did_you_mean(name, choices)}" for name in unknown)
        named = f"{each}, which are not installed rlsdk plugin distributions"
    raise PluginError(f"RLSDK_LOAD_PLUGINS names {named}; installed: {listed}")


def _where_in_file(exc: BaseException, path: str | Path) -> str:
    """`` (line N)``: where in the plugin file ``path`` the error ``exc`` was raised, or ``""``."""
    target = os.path.realpath(path)
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        if os.path.realpath(exc.filename) == target:
            return f" (line {exc.lineno})"
    lines = [
        f.lineno
        for f in traceback.extract_tb(exc.__traceback__)
        if f.filename and os.path.realpath(f.filename) == target
    ]
    return f" (line {lines[-1]})" if lines and lines[-1] else ""


def _describe(exc: BaseException) -> str:
    """``Type: message`` on one line; a :class:`SyntaxError`'s message without its ``(file, line N)``."""
    message = " ".join((exc.msg if isinstance(exc, SyntaxError) and exc.msg else str(exc)).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _report(info: PluginInfo, exc: BaseException, what: str) -> None:
    info.error = f"{what}: {type(exc).__name__}: {exc}"
    if info.file is not None:
        # named by the user (--plugin FILE): never skipped, whatever RLSDK_STRICT_PLUGINS says
        where = _where_in_file(exc, info.file)
        raise PluginError(f"plugin file {info.file!r} failed to {what}: {_describe(exc)}{where}") from exc
    if _env_flag("RLSDK_STRICT_PLUGINS"):
        raise PluginError(f"plugin {info.label} failed to {what}: {exc}") from exc
    warnings.warn(
        f"rlsdk: plugin {info.label} failed to {what} and is skipped: {type(exc).__name__}: {exc} "
        "(set RLSDK_STRICT_PLUGINS=1 to make this an error)",
        RuntimeWarning,
        stacklevel=3,
    )


def _load_file_plugin(path: str | Path) -> ModuleType:
    """Import plugin file ``path`` (running its top-level code); any failure is a :class:`PluginError`."""
    path = Path(path)
    if not path.is_file():
        raise PluginError(f"plugin file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"rlsdk_file_plugin_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin file {str(path)!r} cannot be imported (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    # in sys.modules while it runs, as for any import (dataclasses, pickle and typing look it up there)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - whatever the file raises, it is the file's error
        sys.modules.pop(spec.name, None)
        raise PluginError(
            f"plugin file {str(path)!r} failed to import: {_describe(exc)}{_where_in_file(exc, path)}"
        ) from exc
    return module


def get_plugin_manager(
    load_entrypoints: bool = True, extra: Iterable[Any] = ()
) -> tuple[pluggy.PluginManager, list[PluginInfo]]:
    """Build a fresh plugin manager.

    Args:
        load_entrypoints: Load installed plugins from the ``rlsdk`` entry-point group.
        extra: More plugins to register: modules, objects, or paths of ``.py`` files.

    Returns:
        The manager and one :class:`PluginInfo` per plugin seen (including failed ones).
    """
    pm = pluggy.PluginManager("rlsdk")
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []
    if load_entrypoints:
        wanted = _load_filter()

        # Only the group's entry points (reading every distribution's metadata costs more than all
        # of rlsdk's own imports). rlsdk's plugins load, and so register, first: on a name clash
        # they keep the name.
        def distribution(ep: importlib.metadata.EntryPoint) -> str:
            return (ep.dist.name if ep.dist is not None else None) or "?"

        found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if wanted:
            # before importing anything: a misspelt name would otherwise drop that plugin silently
            installed = {_normalise(distribution(ep)): distribution(ep) for ep in found if ep.dist is not None}
            _check_load_filter(wanted, installed)
        for ep in sorted(found, key=lambda ep: _normalise(distribution(ep)) != CORE_DISTRIBUTION):
            dist_name = distribution(ep)
            normalised = _normalise(dist_name)
            if wanted is not None and normalised != CORE_DISTRIBUTION and normalised not in wanted:
                continue
            info = PluginInfo(
                name=ep.name, distribution=dist_name, version=ep.dist.version if ep.dist else None, module=ep.value
            )
            if any(i.label == info.label for i in infos):
                continue  # the same distribution seen twice on sys.path
            infos.append(info)
            try:
                plugin = ep.load()
                pm.register(plugin, name=info.label)
            except Exception as exc:  # noqa: BLE001 - any failure is the plugin's, reported by name
                if pm.get_plugin(info.label) is not None:
                    pm.unregister(name=info.label)
                _report(info, exc, "load")
    for plugin in extra:
        if isinstance(plugin, (str, Path)):
            info = PluginInfo(name=Path(plugin).stem, module=str(plugin), file=str(plugin))
            infos.append(info)
            module = _load_file_plugin(plugin)
            try:
                pm.register(module, name=info.label)
            except Exception as exc:  # noqa: BLE001 - the user named this file: _report raises
                _report(info, exc, "validate")
            continue
        if pm.is_registered(plugin):
            continue  # already loaded through its entry point
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        infos.append(PluginInfo(name=name, module=getattr(plugin, "__name__", None)))
        pm.register(plugin, name=name)
    _check_pending(pm, infos)
    for info in infos:
        plugin = pm.get_plugin(info.label)
        if plugin is not None:
            info.hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
    if _env_flag("RLSDK_TRACE_PLUGINS"):
        _enable_tracing(pm)
    return pm, infos


def _check_pending(pm: pluggy.PluginManager, infos: list[PluginInfo]) -> None:
    """Reject (and report) plugins implementing hooks that do not exist, such as a misspelt name."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            label = pm.get_name(exc.plugin)
            pm.unregister(exc.plugin)
            info = next((i for i in infos if i.label == label), None) or PluginInfo(name=str(label))
            _report(info, exc, "validate (unknown hook)")


def _enable_tracing(pm: pluggy.PluginManager) -> None:
    def before(hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        args = ", ".join(f"{k}={v!r:.60}" for k, v in kwargs.items())
        print(f"[rlsdk trace] {hook_name}({args}) -> {[i.plugin_name for i in impls]}", file=sys.stderr)

    def after(outcome: Any, hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        print(f"[rlsdk trace] {hook_name} returned {outcome.get_result()!r:.80}", file=sys.stderr)

    pm.add_hookcall_monitoring(before, after)


class Registry:
    """Every registered component factory, by kind and name.

    Built by calling each registration hook of each plugin separately, so a plugin that raises, or
    whose ``register`` call is bad (an invalid name, a factory that is not callable, a name another
    plugin registered first), is reported and skipped whole while the others register. A clash names
    both plugins; the first one registered keeps the name (rlsdk's own register first).
    ``RLSDK_STRICT_PLUGINS=1`` turns each of these into a :class:`PluginError`.
    """

    def __init__(self, pm: pluggy.PluginManager, infos: list[PluginInfo]):
        self.pm = pm
        self.plugins = infos
        self._factories: dict[str, dict[str, Callable[..., Any]]] = {kind: {} for kind in KINDS}
        self._owners: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}
        by_label = {info.label: info for info in infos}
        trace = _env_flag("RLSDK_TRACE_PLUGINS")
        for kind, hook_name in KINDS.items():
            hook = getattr(pm.hook, hook_name)
            for impl in hook.get_hookimpls():  # registration order (rlsdk first)
                info = by_label.get(impl.plugin_name) or PluginInfo(name=impl.plugin_name)
                if info.error:
                    continue
                register = self._make_register(kind, info)
                if trace:
                    print(f"[rlsdk trace] {hook_name}(register) -> {impl.plugin_name}", file=sys.stderr)
                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except Exception as exc:  # noqa: BLE001 - a bad name, a clash or a raise: the plugin's
                    self._drop(info)
                    pm.unregister(name=impl.plugin_name)  # skipped whole: its event hooks too
                    _report(info, exc, f"register ({hook_name})")

    def _make_register(self, kind: str, info: PluginInfo) -> Callable[[str, Callable[..., Any]], None]:
        def register(name: str, factory: Callable[..., Any]) -> None:
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise PluginError(
                    f"plugin {info.label} registered a {kind} with invalid name {name!r}; "
                    "names are letters, digits, '_', '-', '.' and '+'"
                )
            if not callable(factory):
                raise PluginError(f"plugin {info.label} registered {kind} {name!r} with a non-callable {factory!r}")
            owner = self._owners[kind].get(name)
            if owner is not None:
                raise PluginError(
                    f"{kind} {name!r} is registered by two plugins: {owner} and {info.label} "
                    f"(kept: {owner}'s). Uninstall one, or select plugins with RLSDK_LOAD_PLUGINS."
                )
            self._factories[kind][name] = factory
            self._owners[kind][name] = info.label
            info.registers.setdefault(kind, []).append(name)

        return register

    def _drop(self, info: PluginInfo) -> None:
        for kind, names in info.registers.items():
            for name in names:
                self._factories[kind].pop(name, None)
                self._owners[kind].pop(name, None)
        info.registers = {}

    # -- lookups ----------------------------------------------------------------------------------

    def names(self, kind: str) -> list[str]:
        """Sorted names registered for ``kind``."""
        return sorted(self._check_kind(kind))

    def owner(self, kind: str, name: str) -> str:
        """The plugin that registered ``name``."""
        self.factory(kind, name)
        return self._owners[kind][name]

    def _check_kind(self, kind: str) -> dict[str, Callable[..., Any]]:
        _kind(kind)  # an unknown kind: a ConfigError listing the valid ones
        return self._factories[kind]

    def factory(self, kind: str, name: str, where: str | None = None) -> Callable[..., Any]:
        """The factory registered as ``name`` for ``kind``; a clear error lists the valid names."""
        factories = self._check_kind(kind)
        if name in factories:
            return factories[name]
        where = where or f"{kind}.name"
        failed = [i.label for i in self.plugins if i.error]
        hint = f" Plugins that failed to load: {', '.join(failed)}." if failed else ""
        raise ConfigError(
            f"unknown {kind} {name!r} (from {where}){did_you_mean(name, factories)}; "
            f"valid: {', '.join(sorted(factories)) or '(none registered)'}.{hint}"
        )

    def create(self, kind: str, name: str, options: dict[str, Any] | None = None, where: str | None = None) -> Any:
        """Build component ``name`` of ``kind`` from ``options`` (its config section without ``name``).

        Unknown or missing options are a :class:`ConfigError` that lists the valid ones.
        """
        factory = self.factory(kind, name, where)
        options = dict(options or {})
        where = where or kind
        check_options(factory, options, f"{where} ({kind} {name!r})")
        return factory(**options)

    def label(self, kind: str, name: str) -> str:
        """``kind 'name' (plugin dist:plugin)``: how error messages name a registered component."""
        return f"{kind} {name!r} (plugin {self.owner(kind, name)})"

    def build(self, kind: str, name: str, options: dict[str, Any] | None = None, where: str | None = None) -> Any:
        """:meth:`create`, with the factory's own failures reported as the component's
        (:func:`rlsdk.errors.guard`) and the result checked against its kind's members
        (:func:`rlsdk.kinds.conform`): what the trainer and config validation use."""
        label = self.label(kind, name)
        with guard(label, f"its factory with {where or kind} options {dict(options or {})}"):
            component = self.create(kind, name, options, where=where)
        return conform(kind, component, label)


def factory_options(factory: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """The keyword options of ``factory`` (name -> parameter); None when it takes any (``**options``)
    or has no signature to read."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_options(factory: Callable[..., Any], options: dict[str, Any], where: str) -> None:
    """Raise :class:`ConfigError` if ``options`` do not fit the signature of ``factory``."""
    params = factory_options(factory)
    if params is None:
        return
    valid = list(params)
    for key in options:
        if key not in valid:
            raise ConfigError(
                f"unknown option {key!r} for {where}{did_you_mean(key, valid)}; "
                f"valid options: {', '.join(valid) or '(none)'}"
            )
    missing = [n for n in valid if params[n].default is inspect.Parameter.empty and n not in options]
    if missing:
        raise ConfigError(f"missing required option(s) {', '.join(missing)} for {where}")


_DEFAULT: Registry | None = None


def get_registry(extra: Iterable[Any] = (), refresh: bool = False) -> Registry:
    """The registry of the installed plugins (built once and cached; ``extra`` or ``refresh`` rebuild it)."""
    global _DEFAULT
    extra = list(extra)
    if extra:
        return Registry(*get_plugin_manager(extra=extra))
    if _DEFAULT is None or refresh:
        _DEFAULT = Registry(*get_plugin_manager())
    return _DEFAULT


def reset_registry() -> None:
    """Forget the cached registry (after installing a plugin, or in tests)."""
    global _DEFAULT
    _DEFAULT = None


def create(kind: str, name: str, **options: Any) -> Any:
    """Build any registered component outside a training run.

    Example:
        >>> import rlsdk
        >>> adv = rlsdk.create("advantage", "grpo")
        >>> callable(adv)
        True
    """
    return get_registry().create(kind, name, options)
