"""Repeat a run from its folder and check that it gives the same metrics.

:func:`reproduce` trains ``RUN_DIR/config.yaml`` (the resolved config, seed included) again into a
new folder, compares the two ``metrics.jsonl`` step by step (every value except the timings, exactly
by default) and the two ``manifest.json`` on what can change results (versions, git commits,
plugins, platform, hardware, threads, determinism settings, data hashes), and writes the report as
``NEW_DIR/reproduce.json``. With ``steps=K`` it repeats only the first ``K`` steps of the same run:
the config is left unchanged (a shorter ``train.steps`` would change a cosine schedule) and training
stops after step ``K`` (:func:`rlsdk.trainer.train`'s ``until``). A run that let torch choose its
thread count (``train.threads: 0``) is repeated with the count its manifest recorded.

What it cannot promise: on the CPU a run repeats bit for bit only with the same versions, the same
number of threads and the same hardware; GPU kernels may be nondeterministic; and
PyTorch's reproducibility notes give no bitwise guarantee across releases, platforms, or CPU vs GPU.
A difference is therefore reported together with the environment differences that may explain it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlsdk.config import load_config, load_yaml
from rlsdk.errors import ConfigError
from rlsdk.plugins import Registry
from rlsdk.provenance.rundir import atomic_write_text, read_metrics

__all__ = ["MetricDifference", "ReproduceReport", "compare_metrics", "environment_differences", "reproduce"]

_TIMING = {"wall_time", "step_time", "tokens_per_s"}
_MISSING = object()


@dataclass
class MetricDifference:
    """One differing value; a key (or step, then ``key == "step"``) missing on one side is None."""

    step: int
    key: str
    original: float | str | None
    reproduced: float | str | None


@dataclass
class ReproduceReport:
    """The result of :func:`reproduce` (also written as ``NEW_DIR/reproduce.json``)."""

    run_dir: str
    new_dir: str
    steps_compared: int
    metrics_compared: int
    identical: bool
    first_difference: MetricDifference | None
    max_abs_difference: dict[str, float]
    environment: list[str]
    atol: float = 0.0
    rtol: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (non-finite floats become None)."""
        return _finite(asdict(self))

    def to_text(self) -> str:
        """A few lines for a reader: the verdict, the first and largest differences, the environment."""
        lines = [f"reproduced {self.run_dir} in {self.new_dir}"]
        tolerance = f" (atol {self.atol:g}, rtol {self.rtol:g})" if self.atol or self.rtol else ""
        d = self.first_difference
        if d is None:
            lines.append(f"identical{tolerance}: {self.steps_compared} steps, {self.metrics_compared} values compared")
        elif d.key == "step":
            side = "original" if d.reproduced is None else "reproduction"
            lines.append(f"differs at step {d.step}: only the {side} has it ({self.steps_compared} steps compared)")
        else:
            largest = sorted(self.max_abs_difference.items(), key=lambda kv: -kv[1])[:5]
            lines.append(
                f"differs{tolerance} from step {d.step}, key {d.key!r}: {_fmt(d.original)} vs {_fmt(d.reproduced)}; "
                f"largest differences: {', '.join(f'{k} {v:.3g}' for k, v in largest)}"
            )
        if self.environment:
            lines += ["environment differences:", *(f"  {line}" for line in self.environment)]
        else:
            lines.append("environment: same versions, git commit, threads and hardware")
        return "\n".join(lines)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _fmt(value: Any) -> str:
    return "missing" if value is None or value is _MISSING else repr(value) if value == "" else str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    return float(value) if isinstance(value, (int, float)) else None


def _is_timing(key: str) -> bool:
    return key in _TIMING or key.startswith("time")


def compare_metrics(
    original_rows: list[dict[str, Any]], reproduced_rows: list[dict[str, Any]], *, atol: float = 0.0, rtol: float = 0.0
) -> tuple[int, int, MetricDifference | None, dict[str, float]]:
    """Compare two runs' metrics rows step by step, timings (``wall_time``, ``step_time``,
    ``tokens_per_s``, ``time*``) and the ``step`` key itself aside.

    Numbers ``a`` (original) and ``b`` are equal when ``abs(a - b) <= atol + rtol * abs(b)`` (exact
    by default); ``"inf"``/``"-inf"`` strings count as numbers, None (a NaN) equals only None.

    Args:
        original_rows: The original ``metrics.jsonl`` rows.
        reproduced_rows: The reproduction's rows.
        atol: Absolute tolerance.
        rtol: Relative tolerance.

    Returns:
        ``(steps compared, values compared, first difference or None, {key: largest absolute
        difference})`` over the keys that differ (``inf`` where a value is missing or not a number).
        A step present on one side only is a difference with key ``"step"``.
    """
    original = {int(r["step"]): r for r in original_rows}
    reproduced = {int(r["step"]): r for r in reproduced_rows}
    steps = values = 0
    first: MetricDifference | None = None
    largest: dict[str, float] = {}
    for step in sorted(original.keys() | reproduced.keys()):
        a_row, b_row = original.get(step), reproduced.get(step)
        if a_row is None or b_row is None:
            first = first or MetricDifference(
                step, "step", None if a_row is None else step, None if b_row is None else step
            )
            continue
        steps += 1
        for key in dict.fromkeys([*a_row, *b_row]):
            if key == "step" or _is_timing(key):
                continue
            values += 1
            a, b = a_row.get(key, _MISSING), b_row.get(key, _MISSING)
            x, y = _number(a), _number(b)
            if x is not None and y is not None:
                same = x == y or (math.isnan(x) and math.isnan(y)) or abs(x - y) <= atol + rtol * abs(y)
                gap = 0.0 if same else abs(x - y)
            else:
                same, gap = a == b, math.inf
            if not same:
                largest[key] = max(largest.get(key, 0.0), gap)
                first = first or MetricDifference(step, key, *(None if v is _MISSING else v for v in (a, b)))
    return steps, values, first, largest


def _fields(manifest: dict[str, Any]) -> dict[str, Any]:
    out = {"seed": manifest.get("seed"), "platform": manifest.get("platform")}
    for section in ("seeds", "versions", "hardware", "environment", "determinism"):
        out.update({f"{section}.{k}": v for k, v in (manifest.get(section) or {}).items()})
    versions = manifest.get("versions") or {}  # the packages that are not already there
    out.update({f"packages.{k}": v for k, v in (manifest.get("packages") or {}).items() if k not in versions})
    for where, info in (manifest.get("git") or {}).items():
        out.update({f"git.{where}.{k}": (info or {}).get(k) for k in ("commit", "dirty")})
    for p in manifest.get("plugins") or []:
        error = f" (failed: {p['error']})" if p.get("error") else ""
        out[f"plugins.{p.get('name')}"] = f"{p.get('distribution')} {p.get('version')}{error}"
    out.update({f"data.{path}": digest for path, digest in (manifest.get("data") or {}).items()})
    return out


def environment_differences(original: dict[str, Any], reproduced: dict[str, Any]) -> list[str]:
    """What differs between two ``manifest.json`` that can change results.

    Compared: seeds, versions (of every installed package), platform, hardware (CPU, GPUs, thread
    count), thread and CUDA environment variables, determinism settings, git commit and dirty flag
    (of the working folder and of rlsdk), plugins (distribution and version) and data file hashes;
    ignored: the time, the command line, the working folder and the host name. A resumed original is
    noted too.

    Args:
        original: The original run's manifest.
        reproduced: The reproduction's manifest.

    Returns:
        One line per difference, ``"field: value (original) vs value (now)"``; ``[]`` when none.
    """
    a, b = _fields(original), _fields(reproduced)
    if not (original.get("packages") and reproduced.get("packages")):  # one predates the packages record
        a, b = ({k: v for k, v in f.items() if not k.startswith("packages.")} for f in (a, b))
    lines = [
        f"{key}: {_fmt(a.get(key, _MISSING))} (original) vs {_fmt(b.get(key, _MISSING))} (now)"
        for key in dict.fromkeys([*a, *b])
        if a.get(key, _MISSING) != b.get(key, _MISSING)
    ]
    resumed = [[r.get("from_step") for r in m.get("resumes") or []] for m in (original, reproduced)]
    if resumed[0] != resumed[1]:
        where = [", ".join(map(str, steps)) or "never" for steps in resumed]
        lines.append(
            f"resumes: from step {where[0]} (original) vs {where[1]} (now); resuming repeats a run exactly "
            "on the CPU, so this alone should not change CPU results"
        )
    return lines


def _new_dir(source: Path) -> Path:
    source = source.resolve()
    path, i = source.with_name(f"{source.name}-reproduce"), 2
    while path.exists():
        path, i = source.with_name(f"{source.name}-reproduce-{i}"), i + 1
    return path


def reproduce(
    run_dir: str | Path,
    registry: Registry,
    out_dir: str | Path | None = None,
    *,
    steps: int | None = None,
    atol: float = 0.0,
    rtol: float = 0.0,
    progress: bool = False,
) -> ReproduceReport:
    """Train a run's config again and compare metrics and manifests; write ``NEW_DIR/reproduce.json``.

    Args:
        run_dir: The original run folder (it holds ``config.yaml`` and ``metrics.jsonl``).
        registry: The components (the installed plugins).
        out_dir: The new folder (default: the sibling ``<name>-reproduce``, ``-reproduce-2``, ...).
        steps: Repeat only the first ``steps`` steps (1 to the original's last step; default all).
        atol: Absolute tolerance of the metric comparison.
        rtol: Relative tolerance of the metric comparison.
        progress: Show a progress bar while training.

    Returns:
        The :class:`ReproduceReport`.

    Raises:
        ConfigError: The folder, its ``config.yaml`` or its metrics are missing, ``steps`` is out of
            range, ``out_dir`` already holds a run, or the config no longer validates.
    """
    source = Path(run_dir)
    if not source.is_dir():
        raise ConfigError(f"run folder {str(source)!r} does not exist; give a folder written by `rlsdk train`")
    config_path = source / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(
            f"{str(config_path)!r} does not exist: reproduce needs the resolved config a run writes there; "
            "give a folder written by `rlsdk train`"
        )
    original_rows = read_metrics(source / "metrics.jsonl")
    if not original_rows:
        raise ConfigError(
            f"{str(source / 'metrics.jsonl')!r} has no steps, so there is nothing to compare; "
            "train the run first or give another run folder"
        )
    last = max(int(r["step"]) for r in original_rows)
    if steps is None:
        steps = last
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= last:
        raise ConfigError(f"steps={steps!r} is out of range: the original run {str(source)!r} has steps 1..{last}")
    new = Path(out_dir) if out_dir is not None else _new_dir(source)
    if (new / "metrics.jsonl").exists() or (new / "config.yaml").exists():
        raise ConfigError(f"output folder {str(new)!r} already holds a run; choose another --out or remove it")
    manifest_path = source / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    overrides: dict[str, Any] = {"run": {"dir": str(new)}}
    base = load_yaml(config_path)
    threads = ((manifest or {}).get("hardware") or {}).get("torch_threads")
    if not (base.get("train") or {}).get("threads") and threads:
        overrides["train"] = {"threads": int(threads)}  # results depend on the thread count: use the original's
    config = load_config(registry, base=base, overrides=overrides)

    from rlsdk.trainer import train  # on first use: the trainer and its imports load only to train

    train(config, registry, run_dir=new, progress=progress, until=steps)

    rows = [r for r in original_rows if int(r["step"]) <= steps]
    compared, values, first, largest = compare_metrics(rows, read_metrics(new / "metrics.jsonl"), atol=atol, rtol=rtol)
    if manifest is not None:
        environment = environment_differences(manifest, json.loads((new / "manifest.json").read_text()))
    else:
        environment = [f"{str(manifest_path)!r} is missing: versions, git and hardware cannot be compared"]
    report = ReproduceReport(
        run_dir=str(source),
        new_dir=str(new),
        steps_compared=compared,
        metrics_compared=values,
        identical=first is None,
        first_difference=first,
        max_abs_difference=largest,
        environment=environment,
        atol=atol,
        rtol=rtol,
    )
    atomic_write_text(new / "reproduce.json", json.dumps(report.to_dict(), indent=2) + "\n")
    return report
