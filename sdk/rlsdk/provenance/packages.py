"""Installed package versions, lock files, and what differs between two environments.

A lock is a pip constraints file of exact pins, one ``name==version`` a line (``#`` comments,
blank lines and a ``; marker`` tail allowed)::

    pip install -c requirements/lock.txt 'torch==2.13.0' -e '.[test,docs]'

installs it, :func:`lock_text` writes one (``rlsdk env > lock.txt``), and :func:`differences` says
where an environment departs from one (``rlsdk env --check lock.txt``). Every run's ``manifest.json``
records its ``packages``, so a run folder works as a lock too (``rlsdk env RUN_DIR``), and
``rlsdk reproduce`` names the packages whose versions changed since the run.

Versions are compared on their public part when the pin has no local label, as pip does:
``torch==2.13.0`` is met by ``2.13.0+cpu``.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from dataclasses import dataclass
from pathlib import Path

from rlsdk.errors import ConfigError

__all__ = ["UNLOCKED", "PackageDifference", "installed_packages", "read_lock", "lock_text", "differences"]

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)\s*(?:;(.*))?$")


def _normalise(name: str) -> str:
    """PEP 503 normalised name: ``Foo_Bar.baz`` -> ``foo-bar-baz``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _name_and_version(dist: importlib.metadata.Distribution) -> tuple[str | None, str | None]:
    """``Name`` and ``Version`` from the metadata's header lines: parsing the whole file as an email,
    as ``dist.metadata`` does, takes ten times as long (0.07 s for 90 packages, at every run's start)."""
    fields: dict[str, str] = {}
    for line in (dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "").splitlines():
        if not line:
            break  # the headers end at the first blank line
        key, _, value = line.partition(":")
        if key in ("Name", "Version"):
            fields.setdefault(key, value.strip())
    if "Name" not in fields or "Version" not in fields:
        return dist.metadata["Name"], dist.version
    return fields["Name"], fields["Version"]


def installed_packages() -> dict[str, str]:
    """``{normalised name: version}`` of every distribution this interpreter sees (first one wins)."""
    out: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name, version = _name_and_version(dist)
        if name and version:
            out.setdefault(_normalise(name), version)
    return dict(sorted(out.items()))


def _marker_holds(marker: str, where: str) -> bool:
    from packaging.markers import InvalidMarker, Marker

    try:
        return Marker(marker).evaluate()
    except InvalidMarker as exc:
        raise ConfigError(f"{where}: invalid environment marker {marker.strip()!r}: {exc}") from None


def read_lock(path: str | Path) -> dict[str, str]:
    """The pins of a lock file, or the ``packages`` of a run folder's ``manifest.json``.

    Args:
        path: A constraints file of ``name==version`` lines, or a run folder.

    Returns:
        ``{normalised name: version}``; pins whose marker does not hold here are left out.

    Raises:
        ConfigError: The file is missing, a line is not an exact pin, or the run has no packages.
    """
    path = Path(path)
    if path.is_dir():
        manifest = path / "manifest.json"
        if not manifest.is_file():
            raise ConfigError(f"{str(path)!r} is a folder without manifest.json; give a run folder or a lock file")
        packages = json.loads(manifest.read_text()).get("packages")
        if not packages:
            raise ConfigError(
                f"{str(manifest)!r} records no packages (written before rlsdk recorded them); give a lock file"
            )
        return {_normalise(k): str(v) for k, v in packages.items() if _normalise(k) != "pip"}  # the installer
    if not path.is_file():
        raise ConfigError(f"lock file {str(path)!r} does not exist; write one with `rlsdk env > FILE`")
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        match = _PIN.match(line)
        if match is None:
            raise ConfigError(f"{where}: {line!r} is not an exact pin; a lock holds one 'name==version' a line")
        name, version, marker = match.groups()
        if marker and not _marker_holds(marker, where):
            continue
        pins[_normalise(name)] = version
    return pins


#: Packages a lock never pins and ``--check --all`` never reports, the installer and rlsdk itself
#: (installed from its source).
UNLOCKED = ("pip", "rlsdk")


def lock_text(packages: dict[str, str], header: str = "", exclude: tuple[str, ...] = UNLOCKED) -> str:
    """A lock file of ``packages``: ``name==version`` lines, sorted, with ``header`` as comments.

    Local version labels are dropped (``2.13.0+cpu`` -> ``2.13.0``), so the pin installs from any
    index that has that release; ``exclude`` lists names left out (rlsdk itself is installed from
    its source, pip is the installer).
    """
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines += [f"{name}=={version.split('+')[0]}" for name, version in sorted(packages.items()) if name not in exclude]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PackageDifference:
    """One package whose version is not the wanted one.

    Attributes:
        name: Normalised distribution name.
        wanted: The version the lock (or the original run) has; None where it has none.
        installed: The version here; None where it is not installed.
    """

    name: str
    wanted: str | None
    installed: str | None

    def __str__(self) -> str:
        if self.installed is None:
            return f"{self.name}: not installed (wanted {self.wanted})"
        if self.wanted is None:
            return f"{self.name}: {self.installed} installed, not in the lock"
        return f"{self.name}: {self.installed} installed, wanted {self.wanted}"


def _same(wanted: str, installed: str) -> bool:
    return installed == wanted or ("+" not in wanted and installed.split("+")[0] == wanted)


def differences(wanted: dict[str, str], installed: dict[str, str], extras: bool = False) -> list[PackageDifference]:
    """Where ``installed`` departs from ``wanted``: other versions, missing packages (and with
    ``extras``, packages ``wanted`` does not list, but those of :data:`UNLOCKED`), sorted by name."""
    out = [
        PackageDifference(name, version, installed.get(name))
        for name, version in wanted.items()
        if name not in installed or not _same(version, installed[name])
    ]
    if extras:
        out += [
            PackageDifference(name, None, version)
            for name, version in installed.items()
            if name not in wanted and name not in UNLOCKED
        ]
    return sorted(out, key=lambda d: d.name)
