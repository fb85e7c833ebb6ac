"""The run folder: atomic file writes, the metrics log and checkpoints.

Layout::

    RUN_DIR/
      config.yaml            resolved config
      manifest.json          versions, git, plugins, seeds, hardware, data hashes
      metrics.jsonl          one JSON object per step (flushed and fsynced per line)
      reward_curve.png       reward over steps
      eval.json              written by ``rlsdk eval``, with the checkpoint it scored
      checkpoints/step_000020.pt, checkpoints/latest
      .rlsdk.lock            while a command writes the folder (see :class:`FolderLock`)

Every file except ``metrics.jsonl`` is written to a temporary file in the same folder and renamed
into place, so a crash never leaves a half-written file; the temporary files a killed process leaves
behind are removed the next time the folder is locked. ``metrics.jsonl`` is appended one line at a
time; on resume, lines past the checkpoint are dropped (they are recomputed, identically on the CPU),
and a line that is not valid JSON is skipped, never the rows after it.
Checkpoints hold only tensors and plain containers and are loaded with ``weights_only=True``, so
loading never unpickles arbitrary objects. A write that fails (a full disk, a read-only folder) is a
:class:`~rlsdk.errors.StorageError` naming the file.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from rlsdk.errors import ConfigError, FolderLocked, StorageError

try:
    import fcntl
except ImportError:  # Windows: folders are not locked
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "RunDir",
    "FolderLock",
    "atomic_write_bytes",
    "atomic_write_text",
    "read_metrics",
    "make_folder",
    "first_missing",
    "remove_empty_folders",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Permissions of the files rlsdk writes: those of a plain ``open`` (``mkstemp`` alone gives 0o600).
_FILE_MODE = 0o666 & ~_umask()


def _storage_error(path: Path, exc: OSError, doing: str = "write") -> StorageError:
    reason = exc.strerror or str(exc)
    return StorageError(f"cannot {doing} {str(path)!r}: {reason}" + (f" (errno {exc.errno})" if exc.errno else ""))


def make_folder(path: str | Path, what: str = "run folder") -> Path:
    """Create ``path`` (and its parents); a path that is a file, or a folder that cannot be created, is a
    :class:`~rlsdk.errors.StorageError` naming it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StorageError(f"{what} {str(path)!r} is a file, not a folder; choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _storage_error(path, exc, "create the folder") from exc
    return path


def first_missing(path: str | Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (``path`` itself, or a parent), or None."""
    path, missing = Path(path).absolute(), None
    while not path.exists():
        missing, path = path, path.parent
    return missing


def remove_empty_folders(path: str | Path, up_to: str | Path) -> None:
    """Remove ``path`` and its parents up to ``up_to`` (included) while they are empty folders."""
    path, up_to = Path(path).absolute(), Path(up_to).absolute()
    for folder in [path, *path.parents]:
        if not folder.is_dir() or any(folder.iterdir()):
            return
        folder.rmdir()
        if folder == up_to:
            return


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename.

    Raises:
        StorageError: The file cannot be written (a full disk, a read-only folder); the old file, if
            any, is left as it was and no temporary file remains.
    """
    path = Path(path)
    make_folder(path.parent, "folder")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(tmp, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise _storage_error(path, exc) from exc
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _parse_metrics(path: Path) -> tuple[list[dict[str, Any]], list[tuple[int, str]], int]:
    """``(rows, bad, lines)``: the JSON-object rows of ``path``, the ``(line number, text)`` of the
    other non-empty lines, and the number of lines."""
    rows: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    if not path.exists():
        return rows, bad, 0
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and isinstance(row.get("step", 0), int):
            rows.append(row)
        else:
            bad.append((number, line))
    return rows, bad, len(lines)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` file.

    A line that is not a JSON object is skipped, and the rows after it are kept. A torn last line (a
    crash while a row was written) is skipped silently; a bad line elsewhere with a ``RuntimeWarning``
    naming it.
    """
    path = Path(path)
    rows, bad, lines = _parse_metrics(path)
    middle = [number for number, _ in bad if number != lines]
    if middle:
        warnings.warn(
            f"{path}: line(s) {', '.join(map(str, middle))} are not valid metrics rows and are skipped",
            RuntimeWarning, stacklevel=2,
        )  # fmt: skip
    return rows


class RunDir:
    """A run folder (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        """``RUN_DIR/metrics.jsonl``."""
        return self.path / "metrics.jsonl"

    @property
    def config_path(self) -> Path:
        """``RUN_DIR/config.yaml``."""
        return self.path / "config.yaml"

    def holds_run(self) -> bool:
        """Whether the folder holds a run (its ``config.yaml`` or ``metrics.jsonl``)."""
        return self.metrics_path.exists() or self.config_path.exists()

    def check_new(self) -> None:
        """Refuse a folder that already holds a run (use ``--resume`` for that), or a path that is a file."""
        if self.holds_run():
            raise ConfigError(
                f"run directory {str(self.path)!r} already holds a run; "
                f"continue it with `rlsdk train --resume {self.path}` or choose another run.dir"
            )
        if self.path.exists() and not self.path.is_dir():
            raise StorageError(f"run.dir {str(self.path)!r} is a file, not a folder; choose another path")

    def create(self) -> None:
        """Make the folder after :meth:`check_new`."""
        self.check_new()
        make_folder(self.checkpoints, "checkpoint folder")

    def lock(self, command: str | None = None) -> FolderLock:
        """A :class:`FolderLock` on this run folder (use it as a context manager)."""
        return FolderLock(self.path, "run folder", command)

    def write_json(self, name: str, data: Any) -> None:
        """Write ``data`` as indented JSON to ``RUN_DIR/name``, atomically."""
        atomic_write_text(self.path / name, json.dumps(data, indent=2, default=str) + "\n")

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one row to ``metrics.jsonl``, flushed and fsynced."""
        line = json.dumps({k: _json_safe(v) for k, v in row.items()})
        try:
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise _storage_error(self.metrics_path, exc) from exc

    def truncate_metrics(self, last_step: int) -> None:
        """Keep only rows with ``step <= last_step`` (atomically).

        Lines that are not valid rows are moved to ``metrics.corrupt.jsonl`` (appended, with their line
        numbers), so nothing is lost.
        """
        rows, bad, lines = _parse_metrics(self.metrics_path)
        if bad:
            kept = "".join(json.dumps({"line": number, "text": line}) + "\n" for number, line in bad)
            corrupt = self.path / "metrics.corrupt.jsonl"
            old = corrupt.read_text() if corrupt.exists() else ""
            atomic_write_text(corrupt, old + kept)
            middle = [str(number) for number, _ in bad if number != lines]  # a torn last line is a crash's
            if middle:
                warnings.warn(
                    f"{self.metrics_path}: line(s) {', '.join(middle)} are not valid metrics rows; "
                    f"moved to {corrupt.name}",
                    RuntimeWarning, stacklevel=2,
                )  # fmt: skip
        rows = [r for r in rows if r.get("step", 0) <= last_step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    # -- checkpoints ------------------------------------------------------------------------------

    def save_checkpoint(self, step: int, state: dict[str, Any], keep: int = 2) -> Path:
        """Write ``checkpoints/step_{step}.pt`` atomically, point ``latest`` at it, keep the newest ``keep``."""
        path = self.checkpoints / f"step_{step:06d}.pt"
        make_folder(self.checkpoints, "checkpoint folder")
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.checkpoints, prefix=".ckpt.", suffix=".tmp")
            os.close(fd)
            os.chmod(tmp, _FILE_MODE)
            torch.save(state, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise _storage_error(path, exc) from exc
            raise StorageError(f"cannot write {str(path)!r}: {exc}") from exc
        except BaseException:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise
        atomic_write_text(self.checkpoints / "latest", path.name + "\n")
        for old in sorted(self.checkpoints.glob("step_*.pt"))[:-keep]:
            old.unlink()
        return path

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint, or None."""
        pointer = self.checkpoints / "latest"
        if pointer.exists():
            candidate = self.checkpoints / pointer.read_text().strip()
            if candidate.exists():
                return candidate
        found = sorted(self.checkpoints.glob("step_*.pt"))
        return found[-1] if found else None

    @staticmethod
    def fingerprint(path: str | Path) -> dict[str, Any]:
        """What identifies a checkpoint file without reading it: its name, size and modification time.

        ``eval.json`` records it, so a result is reused only for the checkpoint it came from.
        """
        stat = Path(path).stat()
        return {"name": Path(path).name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    @staticmethod
    def load_checkpoint(path: str | Path) -> dict[str, Any]:
        """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"checkpoint {str(path)!r} does not exist")
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
            raise ConfigError(
                f"checkpoint {str(path)!r} cannot be loaded: "
                "it is not a torch checkpoint (a truncated or overwritten file?)"
            )
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - report any unreadable checkpoint clearly
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"checkpoint {str(path)!r} cannot be loaded safely (tensors and plain containers only): {first}"
            ) from exc


# --------------------------------------------------------------------------------------------------
# Folder locks


class FolderLock:
    """An exclusive lock on a run or experiment folder while a command writes to it.

    The lock is ``fcntl.flock`` on ``FOLDER/.rlsdk.lock``, which also records the holder (pid, host,
    command, start time) for the message another command gets. The operating system releases a flock
    when its process dies, however it dies, so a lock left by a killed process is stale by
    construction and is simply taken over. The file is removed on release, and so is the folder if
    the lock created it and nothing was written into it (with the parents it created). Taking the lock also
    removes the temporary files that interrupted writes left in the folder. A process that already
    holds a folder's lock may take it again (``rlsdk experiment`` locks its folder, and so does the
    :func:`~rlsdk.research.experiment.run_experiment` it calls); it is released with the outermost.

    Args:
        folder: The folder (created if missing).
        what: How messages name it (``"run folder"``, ``"experiment folder"``).
        command: What the holder is doing, for the other command's message (default: ``sys.argv``).

    Raises:
        FolderLocked: Another process holds the lock; the message names its pid and command.
    """

    NAME = ".rlsdk.lock"
    _held: dict[Path, int] = {}  # folders this process holds -> how many times

    def __init__(self, folder: str | Path, what: str = "run folder", command: str | None = None):
        self.folder = Path(folder)
        self.what = what
        self.command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        self._fd: int | None = None
        self._nested = False
        self._created: Path | None = None

    @property
    def path(self) -> Path:
        """``FOLDER/.rlsdk.lock``."""
        return self.folder / self.NAME

    def acquire(self) -> FolderLock:
        """Take the lock (see the class docstring)."""
        created = first_missing(self.folder)
        make_folder(self.folder, self.what)
        key = self.folder.resolve()
        if key in FolderLock._held:
            FolderLock._held[key] += 1
            self._nested = True
            return self
        if fcntl is None:
            return self
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
            except OSError as exc:
                raise _storage_error(self.path, exc, "create the lock") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 4096).decode("utf-8", errors="replace")
                os.close(fd)
                raise FolderLocked(self._message(holder)) from None
            try:  # the holder we waited for may have removed the file as it released it: take the new one
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command, "since": time.time()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        self._fd, self._created = fd, created
        FolderLock._held[key] = 1
        remove_temporary_files(self.folder)
        return self

    def _message(self, holder: str) -> str:
        try:
            info = json.loads(holder)
        except json.JSONDecodeError:
            info = {}
        if not isinstance(info, dict) or "pid" not in info:
            return f"{self.what} {str(self.folder)!r} is locked by another process; wait for it to finish"
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(info.get("since", 0))))
        where = "" if info.get("host") == socket.gethostname() else f" on host {info.get('host')}"
        return (
            f"{self.what} {str(self.folder)!r} is in use by pid {info['pid']}{where} "
            f"({info.get('command', '?')}, since {since}); wait for it to finish or stop it"
        )

    def release(self) -> None:
        """Give the lock back and remove the lock file."""
        key = self.folder.resolve()
        if self._nested:
            FolderLock._held[key] -= 1
            self._nested = False
            return
        if self._fd is None:
            return
        FolderLock._held.pop(key, None)
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        if self._created is not None:
            remove_empty_folders(self.folder, self._created)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def remove_temporary_files(folder: str | Path) -> list[Path]:
    """Remove the temporary files of interrupted atomic writes in ``folder`` and its ``checkpoints/``.

    Only rlsdk's own names are touched (``.NAME.*.tmp``, ``checkpoints/.ckpt.*.tmp``). Call it only
    while holding the folder's lock: another process's write in progress would lose its file.
    """
    folder = Path(folder)
    removed = [*folder.glob(".*.tmp"), *(folder / "checkpoints").glob(".ckpt.*.tmp")]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
