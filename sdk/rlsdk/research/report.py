"""Figures of runs, experiments and comparisons (matplotlib, headless; PNGs written atomically).

- :func:`plot_run`: one run's training dynamics, one small panel per logged key of
  :data:`DYNAMICS_KEYS` (``RUN_DIR/dynamics.png``).
- :func:`plot_experiment`: per key, each arm's median over seeds with an 80% percentile band
  (10th-90th; Colas et al., *A Hitchhiker's Guide to Statistical Comparisons of RL Algorithms*, 2019;
  percentile bands rather than +-std), for one task of an experiment
  (``EXP_DIR/curves.png``, or ``curves-<task>.png`` when the experiment has several tasks).
- :func:`plot_comparison`: a ``comparison.json``'s interval estimates and probabilities of
  improvement (the interval plots of Agarwal et al., NeurIPS 2021).
- :func:`report`: whichever of these a folder calls for.

A key is *present* when at least one row holds a finite number for it; absent keys get no panel.
"""

from __future__ import annotations

import io
import json
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rlsdk.errors import ConfigError, did_you_mean
from rlsdk.provenance.rundir import atomic_write_bytes, read_metrics
from rlsdk.research import stats
from rlsdk.research.experiment import ExperimentSpec, run_path

__all__ = [
    "DYNAMICS_KEYS",
    "arm_colors",
    "curve_band",
    "significant_steps",
    "plot_run",
    "plot_experiment",
    "plot_comparison",
    "report",
]

#: The default panels in order (reward, held-out reward, KL, entropy, loss, clip fraction, grad norm,
#: response length and learning rate); a panel is drawn when its key was logged.
DYNAMICS_KEYS: tuple[str, ...] = (
    "reward/mean", "eval/reward", "kl", "entropy", "loss", "loss/clip_frac", "grad_norm", "response_length/mean", "lr",
)  # fmt: skip

_Band = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def arm_colors(arms: list[str] | tuple[str, ...] | dict[str, Any]) -> dict[str, str]:
    """Each arm's colour in every plot of an experiment (curves and comparison), from the arms'
    order (the experiment's: the baseline first): the i-th arm gets the i-th colour of matplotlib's
    ``tab10`` cycle, then of ``tab20``'s lighter shades, then the cycle again. The baseline is
    the first arm's colour like any other; significance is drawn by marker fill, not colour.

    Returns:
        Arm name -> a ``#rrggbb`` colour.
    """
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    tab10, tab20 = colormaps["tab10"], colormaps["tab20"]
    palette = [to_hex(tab10(i)) for i in range(10)] + [to_hex(tab20(i)) for i in range(1, 20, 2)]
    return {arm: palette[i % len(palette)] for i, arm in enumerate(arms)}


def _value(row: dict[str, Any], key: str) -> float | None:
    """``row[key]`` as a finite float, or None (missing, null, ``"inf"`` or not a number)."""
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _present_keys(rows: list[dict[str, Any]], keys: tuple[str, ...] | list[str]) -> list[str]:
    """The keys of ``keys`` (in that order) that have a finite value in at least one row."""
    return [k for k in keys if any(_value(r, k) is not None for r in rows)]


def _check_smooth(smooth: Any) -> None:
    """``smooth`` must be an int >= 1 (a bool is not): checked up front, whatever is drawn."""
    if not isinstance(smooth, int) or isinstance(smooth, bool) or smooth < 1:
        raise ConfigError(f"smooth must be an integer >= 1 (a window of logged steps; 1: none), got {smooth!r}")


def _series(rows: list[dict[str, Any]], key: str, smooth: int = 1) -> dict[int, float]:
    """Step -> value of one run's finite points, each the mean of the last ``smooth`` points up to it."""
    points = {r["step"]: v for r in rows if "step" in r and (v := _value(r, key)) is not None}
    steps = sorted(points)
    values = np.asarray([points[s] for s in steps], dtype=np.float64)
    if smooth > 1 and len(values):
        csum = np.concatenate([[0.0], np.cumsum(values)])
        i = np.arange(1, len(values) + 1)
        lo = np.maximum(i - smooth, 0)
        values = (csum[i] - csum[lo]) / (i - lo)
    return dict(zip(steps, values.tolist()))


def curve_band(
    runs: list[list[dict[str, Any]]], key: str, low: float = 10, high: float = 90, smooth: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Median and percentile band of ``key`` across runs, per step.

    Each run's finite values of ``key`` are taken in step order; with ``smooth > 1`` each value is
    first replaced by the mean of that run's last ``smooth`` values up to and including it (a trailing
    window: fewer at the start, and the step label kept, so the curve is not shifted forward). Only
    the steps where every run has a value are kept. Percentiles interpolate linearly (numpy's default).

    Args:
        runs: Each run's ``metrics.jsonl`` rows.
        key: The metric.
        low: The lower percentile (default 10: an 80% band).
        high: The upper percentile.
        smooth: The trailing moving-average window, in logged points (1: none).

    Returns:
        ``(steps, median, low, high)``, four 1-D arrays of equal length (empty when no step is shared).

    Raises:
        ConfigError: Percentiles outside ``0 <= low <= high <= 100`` or ``smooth < 1``.
    """
    if not 0 <= low <= high <= 100:
        raise ConfigError(f"percentiles must satisfy 0 <= low <= high <= 100, got low={low}, high={high}")
    _check_smooth(smooth)
    series = [_series(rows, key, smooth) for rows in runs]
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    if not steps:
        empty = np.zeros(0)
        return np.zeros(0, dtype=np.int64), empty, empty.copy(), empty.copy()
    values = np.asarray([[s[t] for t in steps] for s in series], dtype=np.float64)
    lo, med, hi = np.percentile(values, [low, 50, high], axis=0)
    return np.asarray(steps), med, lo, hi


def significant_steps(
    runs: list[list[dict[str, Any]]],
    baseline_runs: list[list[dict[str, Any]]],
    key: str,
    alpha: float = 0.05,
    smooth: int = 1,
) -> np.ndarray:
    """The steps at which ``key`` differs between two sets of runs: a Welch t-test across seeds at each
    step, Benjamini-Hochberg-corrected over the steps (the per-step marks of Colas et al., *A Hitchhiker's
    Guide to Statistical Comparisons of RL Algorithms*, 2019, with false-discovery-rate control).

    Args:
        runs: One arm's runs (``metrics.jsonl`` rows each), at least 2.
        baseline_runs: The baseline's runs, at least 2.
        key: The metric.
        alpha: The false-discovery rate.
        smooth: Trailing moving-average window of each run (as in :func:`curve_band`).

    Returns:
        The steps (shared by every run of both sets) whose adjusted p-value is below ``alpha``;
        empty when either set has fewer than 2 runs.
    """
    _check_smooth(smooth)
    if len(runs) < 2 or len(baseline_runs) < 2:
        return np.zeros(0, dtype=np.int64)
    a, b = ([_series(rows, key, smooth) for rows in group] for group in (runs, baseline_runs))
    steps = sorted(set.intersection(*(set(s) for s in a + b)))
    if not steps:
        return np.zeros(0, dtype=np.int64)
    p = [stats.welch_test([s[t] for s in a], [s[t] for s in b]).p_value for t in steps]
    return np.asarray(steps, dtype=np.int64)[stats.benjamini_hochberg(p) < alpha]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int, title: str) -> tuple[Any, list[Any]]:
    """A figure with ``n`` small panels, three per row (unused cells removed)."""
    plt = _plt()
    cols = min(3, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows + 0.6), dpi=100, squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        fig.delaxes(ax)
    fig.suptitle("\n".join(textwrap.fill(line, 45 * cols) for line in title.split("\n")), fontsize=10)
    return fig, flat[:n]


def _save(fig: Any, out: str | Path, rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> Path:
    """Lay out, render to PNG, close the figure and write the file atomically."""
    try:
        fig.tight_layout(rect=rect)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        _plt().close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return Path(out)


def _panel(ax: Any, key: str, span: tuple[float, float]) -> None:
    """Title, labels and grid of one panel; x from ``span`` (the figure's first and last step)."""
    from matplotlib.ticker import MaxNLocator

    ax.set_title(key, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    pad = max(0.5, 0.02 * (span[1] - span[0]))
    ax.set_xlim(span[0] - pad, span[1] + pad)  # every panel on the same steps (eval points in context)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.ticklabel_format(axis="y", useOffset=False)  # an offset label would sit on the title
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def plot_run(
    run_dir: str | Path, out: str | Path | None = None, keys: tuple[str, ...] | list[str] = DYNAMICS_KEYS
) -> Path:
    """Draw one run's training dynamics: a panel per present key, x = step (``eval/`` keys as markers).

    Args:
        run_dir: The run folder (with ``metrics.jsonl``).
        out: The PNG (default ``RUN_DIR/dynamics.png``).
        keys: The candidate panels, in order.

    Returns:
        The PNG's path.

    Raises:
        ConfigError: The run has no metrics, or none of ``keys``.
    """
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    if not rows:
        raise ConfigError(f"run {str(run_dir)!r} has no metrics.jsonl rows; it has not trained")
    present = _present_keys(rows, keys)
    if not present:
        logged = sorted({k for r in rows for k in r} - {"step", "wall_time"})
        raise ConfigError(f"run {str(run_dir)!r} logs none of {', '.join(keys)}; it logs {', '.join(logged)}")
    fig, axes = _grid(len(present), f"{run_dir.name}: training dynamics ({len(rows)} steps)")
    span = (min(r["step"] for r in rows), max(r["step"] for r in rows))
    for ax, key in zip(axes, present):
        steps, values = zip(*_series(rows, key).items())
        sparse = key.startswith("eval/") or len(steps) < 2
        ax.plot(steps, values, marker="o" if sparse else None, markersize=4, linewidth=1 if sparse else 1.5)
        _panel(ax, key, span)
    return _save(fig, out or run_dir / "dynamics.png")


def _load_spec(exp_dir: Path) -> ExperimentSpec:
    path = exp_dir / "experiment.yaml"
    if not path.is_file():
        raise ConfigError(
            f"{str(exp_dir)!r} is not an experiment folder (no experiment.yaml); run `rlsdk experiment` first"
        )
    return ExperimentSpec(**yaml.safe_load(path.read_text()))


def _experiment_curves(
    exp_dir: Path, spec: ExperimentSpec, task: str, keys: tuple[str, ...] | list[str], smooth: int
) -> tuple[dict[str, dict[str, _Band]], dict[str, list[int]], dict[str, list[list[dict[str, Any]]]]]:
    """``({key: {arm: curve_band(...)}}, {arm: seeds used}, {arm: their runs' rows})`` over the seeds
    whose run has metrics."""
    runs, seeds = {}, {}
    for arm in spec.arms:
        found = [
            (s, rows) for s in spec.seeds if (rows := read_metrics(run_path(exp_dir, arm, task, s) / "metrics.jsonl"))
        ]
        if found:
            seeds[arm], runs[arm] = [s for s, _ in found], [rows for _, rows in found]
    present = _present_keys([r for rows in runs.values() for run in rows for r in run], keys)
    return {k: {arm: curve_band(rows, k, smooth=smooth) for arm, rows in runs.items()} for k in present}, seeds, runs


def _curves_name(spec: ExperimentSpec, task: str) -> str:
    return "curves.png" if len(spec.tasks) == 1 else f"curves-{task}.png"


def plot_experiment(
    exp_dir: str | Path,
    out: str | Path | None = None,
    keys: tuple[str, ...] | list[str] = DYNAMICS_KEYS,
    task: str | None = None,
    smooth: int = 1,
) -> Path:
    """Draw an experiment's training curves for one task: per key a panel, per arm the median over
    seeds (from :func:`curve_band`) and its 10th-90th percentile band, and along the bottom of each
    panel a tick at every step where an arm differs from the baseline (the first arm;
    :func:`significant_steps`, when both have at least 2 seeds).

    Only seeds whose run has metrics are used, and only the steps all of an arm's runs have reached;
    an arm with no runs yet is named in the title. The legend gives each arm's number of seeds.

    Args:
        exp_dir: The experiment folder (with ``experiment.yaml``).
        out: The PNG (default ``EXP_DIR/curves.png``, or ``EXP_DIR/curves-<task>.png`` when the
            experiment has several tasks).
        keys: The candidate panels, in order.
        task: The task drawn (default: the experiment's first).
        smooth: Trailing moving-average window of each run (see :func:`curve_band`).

    Returns:
        The PNG's path.

    Raises:
        ConfigError: Not an experiment folder, an unknown task, or no run has metrics yet.
    """
    _check_smooth(smooth)
    exp_dir = Path(exp_dir)
    spec = _load_spec(exp_dir)
    task = next(iter(spec.tasks)) if task is None else task
    if task not in spec.tasks:
        raise ConfigError(
            f"task {task!r} is not in {str(exp_dir)!r}{did_you_mean(task, spec.tasks)}; tasks: {', '.join(spec.tasks)}"
        )
    curves, seeds, runs = _experiment_curves(exp_dir, spec, task, keys, smooth)
    if not curves:
        raise ConfigError(f"no run of task {task!r} in {str(exp_dir)!r} has metrics of {', '.join(keys)} yet")
    title = f"{spec.name}, task {task}: median over seeds, 10th-90th percentile band"
    title += f", trailing mean of {smooth} steps" if smooth > 1 else ""
    baseline = next(iter(spec.arms))
    marked = [
        arm for arm in runs if arm != baseline and baseline in runs and min(len(runs[arm]), len(runs[baseline])) >= 2
    ]
    title += (
        f"\nmarks at the bottom: steps where an arm differs from {baseline} (Welch per step, BH-corrected, 5%)"
        if marked
        else ""
    )
    missing = [arm for arm in spec.arms if arm not in seeds]
    title += f"\nno runs yet: {', '.join(missing)}" if missing else ""
    fig, axes = _grid(len(curves), title)
    colors = arm_colors(spec.arms)
    drawn = np.concatenate([band[0] for bands in curves.values() for band in bands.values()])
    span = (drawn.min(), drawn.max()) if len(drawn) else (0, 1)
    handles: dict[str, Any] = {}
    for ax, (key, bands) in zip(axes, curves.items()):
        for arm, (steps, med, lo, hi) in bands.items():
            if not len(steps):
                continue
            if key.startswith("eval/") or len(steps) < 2:  # sparse points: the band as error bars
                bars = ax.errorbar(
                    steps, med, yerr=[med - lo, hi - med], color=colors[arm], fmt="o-", markersize=4, capsize=3
                )
                handles.setdefault(arm, bars.lines[0])
            else:
                (handles[arm],) = ax.plot(steps, med, color=colors[arm], linewidth=1.5)
                ax.fill_between(steps, lo, hi, color=colors[arm], alpha=0.2, linewidth=0)
        for row, arm in enumerate(marked):
            marks = significant_steps(runs[arm], runs[baseline], key, smooth=smooth)
            # x in data, y in axes units: a row of ticks per arm along the panel's bottom edge
            ax.plot(
                marks,
                np.full(len(marks), 0.03 + 0.04 * row),
                "|",
                color=colors[arm],
                markersize=5,
                transform=ax.get_xaxis_transform(),
            )
        _panel(ax, key, span)
    labels = [f"{arm} ({len(seeds[arm])} seed{'s' * (len(seeds[arm]) != 1)})" for arm in handles]
    fig.legend(list(handles.values()), labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    return _save(fig, out or exp_dir / _curves_name(spec, task), rect=(0, 0.06, 1, 1))


def _errorbar(
    ax: Any, y: int, interval: dict[str, Any], color: str, filled: bool = True, marker: str = "o", **kw: Any
) -> None:
    point, low, high = interval.get("point"), interval.get("low"), interval.get("high")
    if point is None:
        return
    xerr = None if low is None or high is None else [[point - low], [high - point]]
    face = color if filled else "white"
    ax.errorbar(
        [point],
        [y],
        xerr=xerr,
        fmt=marker,
        capsize=4,
        color=color,
        markerfacecolor=face,
        markeredgecolor=color,
        markeredgewidth=1.5,
        **kw,
    )


def _comparison_figure(comparison: dict[str, Any], colors: dict[str, str] | None = None) -> Any:
    """The figure of :func:`plot_comparison` (one panel when no arm is compared with the baseline)."""
    if "arms" not in comparison or "baseline" not in comparison:
        raise ConfigError("a comparison needs 'arms' and 'baseline' (the content of comparison.json)")
    arms, baseline = comparison["arms"], comparison["baseline"]
    palette = arm_colors([a["arm"] for a in arms])
    colors = {**palette, **(colors or {})}
    rows = [i for i, a in enumerate(arms) if a["arm"] != baseline and a.get("p_improve") is not None]
    others = [arms[i] for i in rows]  # on the right panel, on the rows they have on the left
    plt = _plt()
    fig, axes = plt.subplots(
        1, 2 if others else 1, figsize=(10 if others else 5.5, 1.4 + 0.5 * len(arms)), dpi=100, squeeze=False
    )
    left = axes[0, 0]
    for i, a in enumerate(arms):
        base = a["arm"] == baseline
        # the baseline a diamond; the other arms filled when Holm-significant, hollow when not
        filled = base or bool(a.get("significant"))
        _errorbar(left, i, a["value"], colors[a["arm"]], filled=filled, marker="D" if base else "o", markersize=7)
    base_value = next((a["value"].get("point") for a in arms if a["arm"] == baseline), None)
    if base_value is not None:
        left.axvline(base_value, color=colors[baseline], linestyle=":", linewidth=1)
    left.set_yticks(
        range(len(arms)),
        [f"{a['arm']} (n={a['runs']})" + (" [baseline]" if a["arm"] == baseline else "") for a in arms],
    )
    for label, a in zip(left.get_yticklabels(), arms):
        label.set_color(colors[a["arm"]])
    left.set_xlabel(comparison.get("metric", "metric"))
    left.set_title("aggregate score (filled: Holm-significant)" if others else "aggregate score", fontsize=9)
    if others:
        right = axes[0, 1]
        for i, a in zip(rows, others):
            _errorbar(right, i, a["p_improve"], colors[a["arm"]], filled=bool(a.get("significant")), markersize=7)
        right.axvline(0.5, color="gray", linestyle="--", linewidth=1)
        right.set_xlim(-0.02, 1.02)
        right.set_yticks(rows, [a["arm"] + (" *" if a.get("significant") else "") for a in others])
        for label, a in zip(right.get_yticklabels(), others):
            label.set_color(colors[a["arm"]])
        right.set_xlabel(f"P(arm > {baseline})")
        right.set_title("probability of improvement (filled, *: Holm-significant)", fontsize=9)
    for ax in axes.flat:
        ax.set_ylim(len(arms) - 0.5, -0.5)  # the first arm (the baseline) on top
        ax.grid(axis="x", alpha=0.3)
    confidence = comparison.get("confidence")
    pct = f"{confidence:.0%} CI" if isinstance(confidence, (int, float)) else "CI"
    score = f"{comparison['score']}, " if comparison.get("score") else ""
    fig.suptitle(f"{score}{comparison.get('metric', 'metric')} with {pct}; baseline {baseline}", fontsize=10)
    return fig


def plot_comparison(comparison: dict[str, Any], out: str | Path, colors: dict[str, str] | None = None) -> Path:
    """Draw a comparison: left, each arm's metric with its interval (the baseline a diamond, with a
    dotted line at its point); right, ``P(arm > baseline)`` with its interval for the other arms and
    a line at 0.5 (absent when no arm is compared with the baseline). An arm's marker is filled when
    its difference from the baseline is Holm-significant, hollow when not.

    Args:
        comparison: A ``comparison.json`` dict (:meth:`rlsdk.research.compare.Comparison.to_dict`).
        out: The PNG.
        colors: Arm -> colour (default :func:`arm_colors` of the comparison's arms in its order;
            :func:`report` passes the experiment's, so each arm has its colour of ``curves.png``).

    Returns:
        The PNG's path.

    Raises:
        ConfigError: The dict has no ``arms`` or ``baseline``.
    """
    return _save(_comparison_figure(comparison, colors), out, rect=(0, 0, 1, 0.95))


def report(path: str | Path, smooth: int = 1) -> list[Path]:
    """Draw every figure a folder calls for.

    An experiment folder (``experiment.yaml``) gets :func:`plot_experiment` for each task
    (``curves.png``, or ``curves-<task>.png`` per task when there are several; a task with no runs
    yet is skipped) and, when ``comparison.json`` exists, :func:`plot_comparison` to
    ``comparison.png``. A run folder (``metrics.jsonl``) gets :func:`plot_run` (``dynamics.png``).

    Args:
        path: The folder.
        smooth: Trailing moving-average window for the experiment curves (see :func:`curve_band`).

    Returns:
        The paths written.

    Raises:
        ConfigError: ``path`` is neither kind of folder, its comparison.json is not JSON, or it holds no
            metrics; ``smooth`` is not an integer >= 1 (checked for a run folder too, which it does not smooth).
    """
    _check_smooth(smooth)
    path = Path(path)
    if (path / "experiment.yaml").is_file():
        spec = _load_spec(path)
        comparison, data = path / "comparison.json", None
        if comparison.is_file():  # read first: a bad file fails before any drawing
            try:
                data = json.loads(comparison.read_text())
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{str(comparison)!r} is not valid JSON: {exc}") from exc
        written = []
        for task in spec.tasks:
            metrics = [run_path(path, arm, task, s) / "metrics.jsonl" for arm in spec.arms for s in spec.seeds]
            if any(m.is_file() and m.stat().st_size for m in metrics):
                written.append(plot_experiment(path, task=task, smooth=smooth))
        if data is not None:
            written.append(plot_comparison(data, path / "comparison.png", colors=arm_colors(spec.arms)))
        if not written:
            raise ConfigError(
                f"experiment folder {str(path)!r} has no run with metrics yet; run `rlsdk experiment` first"
            )
        return written
    if (path / "metrics.jsonl").is_file():
        return [plot_run(path)]
    raise ConfigError(
        f"{str(path)!r} is neither a run folder (with metrics.jsonl, as `rlsdk train` writes) "
        "nor an experiment folder (with experiment.yaml, as `rlsdk experiment` writes)"
    )
