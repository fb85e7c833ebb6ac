"""The run folder: atomic file writes, the metrics log and checkpoints.

Layout::

    RUN_DIR/
      config.yaml            resolved config
      manifest.json          versions, git, plugins, seeds, hardware, data hashes
      metrics.jsonl          one JSON object per step (flushed and fsynced per line)
      reward_curve.png       reward over steps
      eval.json              written by ``rlsdk eval``
      checkpoints/step_000020.pt, checkpoints/latest

Every file except ``metrics.jsonl`` is written to a temporary file in the same folder and renamed
into place, so a crash never leaves a half-written file. ``metrics.jsonl`` is appended one line at a
time; on resume, lines past the checkpoint are dropped (they are recomputed, identically on the CPU).
Checkpoints hold only tensors and plain containers and are loaded with ``weights_only=True``, so
loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from rlsdk.errors import ConfigError

__all__ = ["RunDir", "atomic_write_bytes", "atomic_write_text", "read_metrics"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Permissions of the files rlsdk writes: those of a plain ``open`` (``mkstemp`` alone gives 0o600).
_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, _FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` file (a torn last line from a crash is ignored)."""
    rows = []
    path = Path(path)
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
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

    def create(self) -> None:
        """Make the folder; refuse one that already holds a run (use ``--resume`` for that)."""
        if self.metrics_path.exists() or self.config_path.exists():
            raise ConfigError(
                f"run directory {str(self.path)!r} already holds a run; "
                f"continue it with `rlsdk train --resume {self.path}` or choose another run.dir"
            )
        self.checkpoints.mkdir(parents=True, exist_ok=True)

    def write_json(self, name: str, data: Any) -> None:
        """Write ``data`` as indented JSON to ``RUN_DIR/name``, atomically."""
        atomic_write_text(self.path / name, json.dumps(data, indent=2, default=str) + "\n")

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one row to ``metrics.jsonl``, flushed and fsynced."""
        line = json.dumps({k: _json_safe(v) for k, v in row.items()})
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, last_step: int) -> None:
        """Keep only rows with ``step <= last_step`` (atomically)."""
        rows = [r for r in read_metrics(self.metrics_path) if r.get("step", 0) <= last_step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    # -- checkpoints ------------------------------------------------------------------------------

    def save_checkpoint(self, step: int, state: dict[str, Any], keep: int = 2) -> Path:
        """Write ``checkpoints/step_{step}.pt`` atomically, point ``latest`` at it, keep the newest ``keep``."""
        path = self.checkpoints / f"step_{step:06d}.pt"
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.checkpoints, prefix=".ckpt.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, _FILE_MODE)
        try:
            torch.save(state, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
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
    def load_checkpoint(path: str | Path) -> dict[str, Any]:
        """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"checkpoint {str(path)!r} does not exist")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - report any unreadable checkpoint clearly
            raise ConfigError(f"checkpoint {str(path)!r} cannot be loaded safely: {exc}") from exc
