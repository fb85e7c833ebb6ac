"""``rlsdk.research.reproduce``: repeat a run from its folder, compare metrics and manifests."""

from __future__ import annotations

import copy
import json
import math
import shutil

import pytest
import torch

from rlsdk.config import load_config
from rlsdk.errors import ConfigError
from rlsdk.plugins import get_registry
from rlsdk.provenance.rundir import read_metrics
from rlsdk.research.reproduce import (
    MetricDifference,
    compare_metrics,
    environment_differences,
    reproduce,
)
from rlsdk.trainer import train

TINY = [
    "train.steps=3", "train.prompts_per_step=2", "sampler.n=2", "policy.d_model=16", "policy.n_layers=1",
    "policy.n_heads=2", "run.plot=false", "run.progress=false",
]  # fmt: skip
TIMING = {"wall_time", "step_time", "tokens_per_s", "time/generate"}


@pytest.fixture(scope="module")
def registry():
    return get_registry()


@pytest.fixture(scope="module")
def original(registry, tmp_path_factory):
    """A finished 3-step run; tests that reproduce it write elsewhere (or copy it) unless noted."""
    run = tmp_path_factory.mktemp("runs") / "orig"
    train(load_config(registry, overrides=TINY), registry, run_dir=run)
    return run


def test_reproduce_is_identical_and_names_new_folders(registry, original):
    report = reproduce(original, registry)
    rows = read_metrics(original / "metrics.jsonl")
    values = sum(1 for r in rows for k in r if k != "step" and k not in TIMING)
    assert report.identical, report.to_text()
    assert report.first_difference is None and report.max_abs_difference == {}
    assert report.steps_compared == 3 and report.metrics_compared == values > 3 * 15
    new = original.parent / "orig-reproduce"
    assert report.new_dir == str(new) and [r["step"] for r in read_metrics(new / "metrics.jsonl")] == [1, 2, 3]
    assert json.loads((new / "reproduce.json").read_text()) == report.to_dict()
    assert (new / "summary.json").exists()  # a full-length reproduction is a finished run
    assert report.to_text().splitlines()[1] == f"identical: 3 steps, {values} values compared"
    second = reproduce(original, registry)
    assert second.new_dir == str(original.parent / "orig-reproduce-2") and second.identical


def test_fewer_steps(registry, original, tmp_path):
    report = reproduce(original, registry, tmp_path / "two", steps=2)
    assert report.identical and report.steps_compared == 2
    assert [r["step"] for r in read_metrics(tmp_path / "two" / "metrics.jsonl")] == [1, 2]
    for bad in (0, 4):
        with pytest.raises(ConfigError, match=rf"steps={bad}.*1\.\.3"):
            reproduce(original, registry, tmp_path / f"bad{bad}", steps=bad)
        assert not (tmp_path / f"bad{bad}").exists()


def test_fewer_steps_keep_a_cosine_schedule(registry, tmp_path):
    """``train.steps=2`` would change the cosine learning rate of step 2; stopping early does not."""
    run = tmp_path / "cosine"
    train(load_config(registry, overrides=[*TINY, "train.lr_schedule=cosine"]), registry, run_dir=run)
    report = reproduce(run, registry, tmp_path / "again", steps=2)
    assert report.identical, report.to_text()
    again = load_config(registry, path=tmp_path / "again" / "config.yaml")
    assert again["train"]["steps"] == 3
    # the original let torch choose the threads (train.threads=0): the reproduction uses the recorded count
    recorded = json.loads((run / "manifest.json").read_text())["hardware"]["torch_threads"]
    assert (
        load_config(registry, path=run / "config.yaml")["train"]["threads"] == 0
        and again["train"]["threads"] == recorded
    )


def test_tampered_metric_is_found(registry, original, tmp_path):
    run = tmp_path / "orig"
    shutil.copytree(original, run)
    rows = read_metrics(run / "metrics.jsonl")
    true = rows[1]["loss"]
    rows[1]["loss"] = tampered = true + 0.25
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    report = reproduce(run, registry, tmp_path / "a")
    assert not report.identical
    assert report.first_difference == MetricDifference(2, "loss", tampered, true)
    assert report.max_abs_difference == {"loss": abs(tampered - true)}
    assert f"differs from step 2, key 'loss': {tampered!r} vs {true!r}" in report.to_text()
    assert json.loads((tmp_path / "a" / "reproduce.json").read_text())["identical"] is False
    assert reproduce(run, registry, tmp_path / "b", atol=0.3).identical


def test_compare_metrics_rules():
    row = {
        "step": 1,
        "wall_time": 5.0,
        "step_time": 1.0,
        "tokens_per_s": 9.0,
        "time/generate": 0.1,
        "loss": 1.0,
        "kl": None,
    }
    same = {**row, "wall_time": 6.0, "step_time": 2.0, "tokens_per_s": 1.0, "time/generate": 0.5}
    assert compare_metrics([row], [same]) == (1, 2, None, {})  # timings ignored, None == None
    # a key missing on one side
    steps, values, first, largest = compare_metrics([row], [{**same, "extra": 2.0}])
    assert (values, first, largest) == (3, MetricDifference(1, "extra", None, 2.0), {"extra": math.inf})
    # a step only one side has (the reproduction stopped early)
    steps, _, first, largest = compare_metrics([row, {**row, "step": 2}], [same])
    assert (steps, first, largest) == (1, MetricDifference(2, "step", 2, None), {})
    # "inf" strings and None
    inf = {**row, "loss": "inf"}
    assert compare_metrics([inf], [{**inf}])[2] is None
    assert compare_metrics([inf], [row])[2] == MetricDifference(1, "loss", "inf", 1.0)
    assert compare_metrics([row], [{**row, "kl": 0.0}])[2] == MetricDifference(1, "kl", None, 0.0)
    # tolerances: |a - b| <= atol + rtol * |b|
    near = {**row, "loss": 1.001}
    assert compare_metrics([row], [near])[3] == {"loss": pytest.approx(0.001)}
    assert compare_metrics([row], [near], rtol=1.1e-3)[2] is None
    assert compare_metrics([row], [near], rtol=0.9e-3)[2] is not None
    assert compare_metrics([row], [near], atol=1.1e-3)[2] is None


def test_environment_differences(original):
    manifest = json.loads((original / "manifest.json").read_text())
    manifest["git"]["rlsdk"] = {"commit": "a" * 40, "branch": "main", "dirty": False, "root": "/src"}
    assert environment_differences(manifest, copy.deepcopy(manifest)) == []
    other = copy.deepcopy(manifest)
    other.update(created="2000-01-01T00:00:00", argv=["elsewhere"], cwd="/elsewhere", hostname="other-host")
    assert environment_differences(manifest, other) == []

    def changed(edit):
        now = copy.deepcopy(manifest)
        edit(now)
        return environment_differences(manifest, now)

    torch_version = manifest["versions"]["torch"]
    threads = manifest["hardware"]["torch_threads"]
    plugin = manifest["plugins"][0]
    assert changed(lambda m: m["versions"].update(torch="2.11.0")) == [
        f"versions.torch: {torch_version} (original) vs 2.11.0 (now)"
    ]
    assert changed(lambda m: m["git"]["rlsdk"].update(commit="b" * 40)) == [
        f"git.rlsdk.commit: {'a' * 40} (original) vs {'b' * 40} (now)"
    ]
    assert changed(lambda m: m["git"]["rlsdk"].update(dirty=True)) == [
        "git.rlsdk.dirty: False (original) vs True (now)"
    ]
    assert changed(lambda m: m["hardware"].update(torch_threads=threads + 1)) == [
        f"hardware.torch_threads: {threads} (original) vs {threads + 1} (now)"
    ]
    assert changed(lambda m: m["environment"].update(OMP_NUM_THREADS="1")) == [
        "environment.OMP_NUM_THREADS: missing (original) vs 1 (now)"
    ]
    assert changed(lambda m: m["plugins"][0].update(version="9.9")) == [
        f"plugins.{plugin['name']}: {plugin['distribution']} {plugin['version']} (original) "
        f"vs {plugin['distribution']} 9.9 (now)"
    ]
    assert changed(lambda m: m["determinism"].update(deterministic_algorithms=True)) == [
        "determinism.deterministic_algorithms: False (original) vs True (now)"
    ]
    assert changed(lambda m: m.update(data={"/d/train.jsonl": "f" * 64})) == [
        f"data./d/train.jsonl: missing (original) vs {'f' * 64} (now)"
    ]
    resumed = {**manifest, "resumes": [{"time": 1.0, "argv": [], "from_step": 2}]}
    (line,) = environment_differences(resumed, manifest)
    assert line.startswith("resumes: from step 2 (original) vs never (now)") and "CPU" in line
    assert manifest["versions"]["torch"] == torch.__version__
    # every installed package is recorded; one that changed is named (once, also when in `versions`)
    import scipy

    assert manifest["packages"]["scipy"] == scipy.__version__ and "torch" in manifest["packages"]
    assert changed(lambda m: m["packages"].update(scipy="0.1")) == [
        f"packages.scipy: {scipy.__version__} (original) vs 0.1 (now)"
    ]
    assert changed(lambda m: m["packages"].pop("scipy")) == [
        f"packages.scipy: {scipy.__version__} (original) vs missing (now)"
    ]
    assert changed(lambda m: m["packages"].update(torch="0.1")) == []  # versions.torch is the one compared
    older = {k: v for k, v in manifest.items() if k != "packages"}  # a run from before packages were recorded
    assert environment_differences(older, manifest) == environment_differences(manifest, older) == []


def test_errors(registry, original, tmp_path):
    with pytest.raises(ConfigError, match="nowhere.*does not exist"):
        reproduce(tmp_path / "nowhere", registry)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"empty/config\.yaml.*does not exist"):
        reproduce(tmp_path / "empty", registry)
    shutil.copy(original / "config.yaml", tmp_path / "empty" / "config.yaml")
    with pytest.raises(ConfigError, match=r"metrics\.jsonl.*no steps"):
        reproduce(tmp_path / "empty", registry)
    with pytest.raises(ConfigError, match=r"'.*orig'.* already holds a run"):
        reproduce(original, registry, out_dir=original)


def test_cli_reproduce_exit_status(original, tmp_path, capsys):
    from rlsdk.cli import main

    assert main(["reproduce", str(original), "--out", str(tmp_path / "same"), "--steps", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("identical: 1 steps")
    run = tmp_path / "orig"
    shutil.copytree(original, run)
    rows = read_metrics(run / "metrics.jsonl")
    rows[0]["reward/mean"] += 1.0
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["reproduce", str(run), "--out", str(tmp_path / "other"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["identical"] is False and data["first_difference"]["key"] == "reward/mean"
