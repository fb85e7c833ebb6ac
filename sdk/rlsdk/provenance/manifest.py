"""The run manifest: everything needed to know what produced a run (methodology.md section 10)."""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from rlsdk._version import __version__
from rlsdk.provenance.packages import installed_packages

__all__ = ["build_manifest", "git_info", "file_sha256"]

_ENV_PREFIXES = ("RLSDK_", "CUDA_VISIBLE_DEVICES", "CUBLAS_", "OMP_NUM_THREADS", "PYTHONHASHSEED", "TRITON_")


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_info(path: str | Path) -> dict[str, Any] | None:
    """Commit, branch and dirty flag of the git work tree holding ``path``, or None outside one."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=path, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        return {
            "commit": commit,
            "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "root": git("rev-parse", "--show-toplevel"),
        }
    except (OSError, subprocess.SubprocessError):
        return None


def hardware() -> dict[str, Any]:
    """CPU, memory and accelerator facts."""
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cuda_version"] = torch.version.cuda
    return info


def build_manifest(
    config: dict[str, Any],
    plugins: list[dict[str, Any]],
    seeds: dict[str, int],
    data_files: list[str] = (),  # type: ignore[assignment]
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """A JSON-ready manifest.

    Args:
        config: The resolved config.
        plugins: ``PluginInfo.to_dict()`` of every plugin seen.
        seeds: The seed tree (root and child seeds).
        data_files: Local data files; each is hashed with SHA-256.
        argv: The command line (default ``sys.argv``).
    """
    versions = {"python": sys.version.split()[0], "rlsdk": __version__, "torch": torch.__version__}
    for dist in ("numpy", "pluggy", "omegaconf", "transformers", "triton"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "argv": list(sys.argv if argv is None else argv),
        "cwd": os.getcwd(),
        "seed": config.get("seed"),
        "seeds": seeds,
        "versions": versions,
        "packages": installed_packages(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "hardware": hardware(),
        "git": {
            "cwd": git_info(os.getcwd()),
            "rlsdk": git_info(Path(__file__).resolve().parents[1]),
        },
        "plugins": plugins,
        "data": {str(Path(f).resolve()): file_sha256(f) for f in data_files},
        "environment": {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)},
        "determinism": {
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
    }
