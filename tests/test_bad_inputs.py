"""The catalogue of bad inputs: every case is a command a user could type (or a plugin a user could
write), and each must end with exit status 2 and ONE line on stderr that names the offending value,
without a traceback, leaving every file as it was (a resumed run folder unchanged, no new folder).

Cases run the CLI in-process (``rlsdk.cli.main``) in a fresh folder holding a copy of a trained run
(``RUN``), the plugin file ``bad.py`` (components that break their contract) and a few bad files.
"""

from __future__ import annotations

import hashlib
import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rlsdk.cli import main
from rlsdk.plugins import reset_registry

FAST = ["train.steps=2", "train.prompts_per_step=2", "sampler.n=2", "run.plot=false"]

BAD_PLUGIN = textwrap.dedent(
    '''
    """Components that break their contract, one way each."""
    import math

    import torch

    import rlsdk
    from rlsdk import Example, LossOutput
    from rlsdk_plugins.grpo import GRPOAdvantage
    from rlsdk_plugins.policy_gradient import ClippedPG
    from rlsdk_plugins.tasks import ReverseTask


    def reward(values):
        def make():
            return lambda prompts, completions, metadata: values(len(completions))
        return make


    def raises(prompts, completions, metadata):
        return [1.0 / 0 for _ in completions]


    class Loss(ClippedPG):
        def __init__(self, mode="nan"):
            super().__init__()
            self.mode = mode

        def __call__(self, logprobs, batch):
            out = super().__call__(logprobs, batch)
            return {
                "nan": lambda: LossOutput(out.loss * math.nan, out.metrics),
                "inf": lambda: LossOutput(out.loss + math.inf, out.metrics),
                "vector": lambda: LossOutput(logprobs.sum(-1), out.metrics),
                "bare": lambda: out.loss,
                "detached": lambda: LossOutput(out.loss.detach(), out.metrics),
                "tuple": lambda: (out.loss, out.metrics),
                "metric": lambda: LossOutput(out.loss, {"bad": torch.ones(3)}),
                "raises": lambda: [][1],
            }[self.mode]()


    class Advantage(GRPOAdvantage):
        def __init__(self, mode="shape"):
            super().__init__()
            self.mode = mode

        def __call__(self, batch):
            adv = super().__call__(batch)
            return {
                "shape": lambda: adv[:, :1],
                "nan": lambda: adv * math.nan,
                "list": lambda: adv.tolist(),
                "int": lambda: adv.long(),
                "raises": lambda: {}["missing"],
            }[self.mode]()


    class Task(ReverseTask):
        def __init__(self, mode="empty"):
            super().__init__()
            self.mode = mode

        def sample(self, n, generator):
            examples = super().sample(n, generator)
            return {
                "empty": lambda: [],
                "short": lambda: examples[:1],
                "strings": lambda: [e.prompt for e in examples],
                "raises": lambda: 1 / 0,
                "answer": lambda: [Example(e.prompt, 7) for e in examples],
            }.get(self.mode, lambda: examples)()

        def eval_examples(self):
            return [] if self.mode == "no_eval" else super().eval_examples()


    class NoneSampler:
        params = rlsdk.SamplingParams(n=2, max_new_tokens=4)

        def __call__(self, engine, examples, score, generator, params):
            return None


    def none_sampler(**options):
        return NoneSampler()


    class BrokenTracker:
        def log_config(self, config):
            pass

        def log_metrics(self, metrics, step):
            raise RuntimeError("tracker server unreachable")

        def close(self):
            pass


    def broken_policy(**options):
        raise TypeError("init() got an unexpected keyword argument 'dim'")


    @rlsdk.hookimpl
    def register_rewards(register):
        register("nan_reward", reward(lambda n: [math.nan] * n))
        register("short_reward", reward(lambda n: [1.0] * (n - 1)))
        register("str_reward", reward(lambda n: ["1.0"] * n))
        register("none_reward", reward(lambda n: None))
        register("inf_reward", reward(lambda n: [math.inf] * n))
        register("matrix_reward", reward(lambda n: torch.ones(n, 2)))
        register("raising_reward", lambda: raises)


    @rlsdk.hookimpl
    def register_losses(register):
        register("bad_loss", Loss)


    @rlsdk.hookimpl
    def register_advantages(register):
        register("bad_advantage", Advantage)


    @rlsdk.hookimpl
    def register_tasks(register):
        register("bad_task", Task)


    @rlsdk.hookimpl
    def register_samplers(register):
        register("none_sampler", none_sampler)


    @rlsdk.hookimpl
    def register_trackers(register):
        register("broken_tracker", BrokenTracker)


    @rlsdk.hookimpl
    def register_policies(register):
        register("broken_policy", broken_policy)
    '''
)

HOOK_RAISES = textwrap.dedent(
    """
    import rlsdk


    @rlsdk.hookimpl
    def on_step_end(run, step, metrics):
        raise KeyError("reward/mean_typo")
    """
)


@dataclass
class Case:
    """One bad input: ``argv`` (with ``RUN`` a trained run folder and ``TMP`` the case's folder), the
    substrings the one-line message must hold, and files to write first (name -> text or bytes)."""

    id: str
    argv: list[str]
    expect: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    status: int = 2
    env: dict[str, str] = field(default_factory=dict)
    writes: bool = False  # the failure comes after a step succeeded and was recorded (no checkpoint of it)


def train(*args: str) -> list[str]:
    return ["train", *FAST, *args]


def resume(*overrides: str) -> list[str]:
    """Resume the trained run with a change (nothing may be written before the first step succeeds)."""
    return ["train", "--resume", "RUN", "train.steps=3", *overrides, "--plugin", "bad.py"]


CASES = [
    # -- train: numbers out of range, wrong types, non-finite values ------------------------------
    Case("lr-nan", train("train.lr=nan"), ["train.lr", "nan"]),
    Case("lr-inf", train("train.lr=inf"), ["train.lr", "inf"]),
    Case("lr-huge", train("train.lr=1e40"), ["train.lr", "1e+40"]),
    Case("lr-zero", train("train.lr=0"), ["train.lr", "0"]),
    Case("lr-negative", train("train.lr=-0.1"), ["train.lr", "-0.1"]),
    Case("lr-string", train("train.lr=fast"), ["train.lr", "'fast'"]),
    Case("lr-bool", train("train.lr=true"), ["train.lr", "True"]),
    Case("betas-range", train("train.betas=[2,0.9]"), ["train.betas", "[2, 0.9]"]),
    Case("betas-one", train("train.betas=[0.9]"), ["train.betas", "[0.9]"]),
    Case("betas-string", train("train.betas=abc"), ["train.betas", "'abc'"]),
    Case("betas-one-exact", train("train.betas=[0.9,1.0]"), ["train.betas", "[0.9, 1.0]"]),
    Case("weight-decay", train("train.weight_decay=-1"), ["train.weight_decay", "-1"]),
    Case("weight-decay-nan", train("train.weight_decay=nan"), ["train.weight_decay", "nan"]),
    Case("grad-norm-negative", train("train.max_grad_norm=-1"), ["train.max_grad_norm", "-1"]),
    Case("grad-norm-string", train("train.max_grad_norm=abc"), ["train.max_grad_norm", "'abc'"]),
    Case("grad-norm-inf", train("train.max_grad_norm=inf"), ["train.max_grad_norm", "inf"]),
    Case("reference-string", train("train.reference=abc"), ["train.reference", "'abc'"]),
    Case("reference-int", train("train.reference=1"), ["train.reference", "1"]),
    Case("device-cuda", train("train.device=cuda"), ["train.device", "'cuda'", "cpu"]),
    Case("device-cuda-index", train("train.device=cuda:7"), ["train.device", "'cuda:7'"]),
    Case("device-bogus", train("train.device=gpu0"), ["train.device", "'gpu0'"]),
    Case("device-int", train("train.device=0"), ["train.device", "0"]),
    Case("threads-negative", train("train.threads=-1"), ["train.threads", "-1"]),
    Case("threads-float", train("train.threads=1.5"), ["train.threads", "1.5"]),
    Case("steps-zero", train("train.steps=0"), ["train.steps", "0"]),
    Case("steps-float", train("train.steps=2.5"), ["train.steps", "2.5"]),
    Case("steps-string", train("train.steps=many"), ["train.steps", "'many'"]),
    Case("prompts-zero", train("train.prompts_per_step=0"), ["train.prompts_per_step", "0"]),
    Case("epochs-zero", train("train.epochs=0"), ["train.epochs", "0"]),
    Case("mini-batches-zero", train("train.mini_batches=0"), ["train.mini_batches", "0"]),
    Case("micro-batches-negative", train("train.micro_batches=-2"), ["train.micro_batches", "-2"]),
    Case("warmup-negative", train("train.warmup_steps=-1"), ["train.warmup_steps", "-1"]),
    Case("schedule", train("train.lr_schedule=linear"), ["train.lr_schedule", "'linear'", "cosine"]),
    Case("min-lr-ratio", train("train.min_lr_ratio=2"), ["train.min_lr_ratio", "2"]),
    Case("seed-negative", train("seed=-1"), ["seed", "-1"]),
    Case("seed-bool", train("seed=true"), ["seed", "True"]),
    Case("seed-string", train("seed=abc"), ["seed", "'abc'"]),
    # -- eval and run ------------------------------------------------------------------------------
    Case("eval-temperature", train("eval.temperature=-1"), ["eval.temperature", "-1"]),
    Case("eval-size", train("eval.size=-5"), ["eval.size", "-5"]),
    Case("eval-size-float", train("eval.size=2.5"), ["eval.size", "2.5"]),
    Case("eval-every", train("eval.every=-1"), ["eval.every", "-1"]),
    Case("checkpoint-every", train("run.checkpoint_every=-1"), ["run.checkpoint_every", "-1"]),
    Case("keep-checkpoints", train("run.keep_checkpoints=0"), ["run.keep_checkpoints", "0"]),
    Case("progress", train("run.progress=maybe"), ["run.progress", "'maybe'"]),
    Case("plot", train("run.plot=2"), ["run.plot", "2"]),
    Case("run-root", train("run.root=[a]"), ["run.root", "['a']"]),
    # -- components and their options ---------------------------------------------------------------
    Case("sampler-n-zero", train("sampler.n=0"), ["sampler.n", "0"]),
    Case("sampler-n-one-grpo", train("sampler.n=1"), ["sampler.n=1", "grpo"]),
    Case("sampler-n-one-passk", train("sampler.n=1", "advantage.name=grpo_passk"), ["sampler.n=1", "grpo_passk"]),
    Case("sampler-temperature", train("sampler.temperature=-1"), ["sampler.temperature", "-1"]),
    Case("sampler-top-p", train("sampler.top_p=0"), ["sampler.top_p", "0"]),
    Case("sampler-top-p-big", train("sampler.top_p=1.5"), ["sampler.top_p", "1.5"]),
    Case("max-new-tokens-zero", train("sampler.max_new_tokens=0"), ["sampler.max_new_tokens", "0"]),
    Case(
        "max-new-tokens-over-max-len", train("sampler.max_new_tokens=100"), ["sampler.max_new_tokens", "100", "max_len"]
    ),
    Case("max-len-too-short", train("policy.max_len=6"), ["policy.max_len", "6"]),
    Case("d-model-huge", train("policy.d_model=1000000"), ["policy", "d_model=1000000", "TiB"]),
    Case("d-model-zero", train("policy.d_model=0"), ["policy.d_model", "0"]),
    Case("layers-zero", train("policy.n_layers=0"), ["policy.n_layers", "0"]),
    Case("unknown-policy-option", train("policy.dim=64"), ["'dim'", "d_model"]),
    Case("loss-name", train("loss.name=clipped"), ["loss", "'clipped'", "clipped_pg"]),
    Case("loss-eps", train("loss.eps_low=-1"), ["loss.eps_low", "-1"]),
    Case("loss-agg", train("loss.agg=mean"), ["loss.agg", "'mean'"]),
    Case("loss-option", train("loss.kl_coeff=0.1"), ["'kl_coeff'", "kl_coef"]),
    Case("advantage-name", train("advantage.name=gae"), ["advantage", "'gae'"]),
    Case("advantage-eps", train("advantage.eps=0"), ["advantage.eps", "0"]),
    Case("advantage-bool", train("advantage.norm_std=maybe"), ["advantage.norm_std", "'maybe'"]),
    Case("task-name", train("task.name=reverse2"), ["task", "'reverse2'", "reverse"]),
    Case("task-digits", train("task.min_digits=0"), ["task.min_digits", "0"]),
    Case("reward-name", train("rewards.exact=1.0"), ["reward", "'exact'", "exact_match"]),
    Case("reward-weight", train("rewards.char_match.weight=abc"), ["rewards.char_match.weight", "'abc'"]),
    Case("reward-weight-nan", train("rewards.char_match.weight=.nan"), ["rewards.char_match.weight", "nan"]),
    Case("tracker-name", train("trackers.wandbb={}"), ["tracker", "'wandbb'"]),
    Case("backend-name", train("logprob.backend=fast"), ["logprob_backend", "'fast'"]),
    Case("algorithm", train("algorithm=grpoo"), ["algorithm", "'grpoo'", "grpo"]),
    Case("unknown-key", train("trian.steps=3"), ["'trian'", "train"]),
    Case("unknown-nested-key", train("train.step=3"), ["'train.step'", "steps"]),
    Case("section-not-mapping", train("train=3"), ["train", "3"]),
    # -- override syntax -----------------------------------------------------------------------------
    Case("override-no-key", train("=3"), ["'=3'", "key=value"]),
    Case("override-interpolation", train("run.root=${oc.env:HOME}"), ["${oc.env:HOME}", "interpolation"]),
    Case("override-unparsable", train("train.betas=[0.9,"), ["train.betas=[0.9,"]),
    Case("argument", train("steps"), ["'steps'", "key=value"]),
    # -- files -----------------------------------------------------------------------------------------
    Case("config-missing", train("missing.yaml"), ["'missing.yaml'", "does not exist"]),
    Case("config-invalid", train("bad.yaml"), ["'bad.yaml'", "not valid YAML"], {"bad.yaml": "train: [1,\n"}),
    Case(
        "config-not-utf8",
        train("latin1.yaml"),
        ["'latin1.yaml'", "UTF-8"],
        {"latin1.yaml": "seed: 1 # caf\xe9\n".encode("latin-1")},
    ),
    Case(
        "config-duplicate",
        train("dup.yaml"),
        ["'dup.yaml'", "'steps'", "twice"],
        {"dup.yaml": "train:\n  steps: 3\n  steps: 4\n"},
    ),
    Case(
        "config-duplicate-top",
        train("dup2.yaml"),
        ["'dup2.yaml'", "'seed'", "twice"],
        {"dup2.yaml": "seed: 1\nseed: 2\n"},
    ),
    Case("config-list", train("list.yaml"), ["'list.yaml'", "mapping"], {"list.yaml": "- 1\n- 2\n"}),
    Case("config-unknown-key", train("key.yaml"), ["'trainer'", "key.yaml"], {"key.yaml": "trainer:\n  steps: 3\n"}),
    Case("config-folder", train("folder.yaml"), ["'folder.yaml'", "folder"], {"folder.yaml/x": "seed: 1\n"}),
    Case(
        "config-bad-value", train("value.yaml"), ["train.lr", "value.yaml", "-1"], {"value.yaml": "train:\n  lr: -1\n"}
    ),
    Case("run-dir-is-file", train("--run-dir", "afile"), ["'afile'", "file"], {"afile": "x"}),
    Case("run-dir-holds-run", train("--run-dir", "RUN"), ["already holds a run", "--resume"]),
    # -- resume ----------------------------------------------------------------------------------------
    Case("resume-missing", ["train", "--resume", "nowhere"], ["'nowhere'", "not a run folder"]),
    Case("resume-file", ["train", "--resume", "afile"], ["'afile'", "not a run folder"], {"afile": "x"}),
    Case("resume-with-config-file", ["train", "--resume", "RUN", "x.yaml"], ["--resume", "key=value"]),
    Case("resume-d-model", ["train", "--resume", "RUN", "policy.d_model=64"], ["does not fit", "policy"]),
    Case("resume-bad-override", ["train", "--resume", "RUN", "train.lr=nan"], ["train.lr", "nan"]),
    Case(
        "resume-edited-config",
        ["train", "--resume", "RUN"],
        ["train.steps", "-3"],
        {"RUN/config.yaml": "EDIT:steps: 2\n:steps: -3\n"},
    ),
    Case(
        "resume-edited-shape",
        ["train", "--resume", "RUN"],
        ["does not fit", "config.yaml"],
        {"RUN/config.yaml": "EDIT:d_model: 128\n:d_model: 64\n"},
    ),
    Case(
        "resume-corrupt-checkpoint",
        ["train", "--resume", "RUN"],
        ["step_000002.pt", "cannot be loaded"],
        {"RUN/checkpoints/step_000002.pt": b"not a checkpoint"},
    ),
    # -- components that break their contract (plugin bad.py), found on the first resumed step ------
    Case("reward-nan", resume("rewards.nan_reward=1.0"), ["reward 'nan_reward'", "plugin bad", "nan"]),
    Case("reward-inf", resume("rewards.inf_reward=1.0"), ["reward 'inf_reward'", "inf"]),
    Case("reward-short", resume("rewards.short_reward=1.0"), ["reward 'short_reward'", "3 values for 4 completions"]),
    Case("reward-strings", resume("rewards.str_reward=1.0"), ["reward 'str_reward'", "'1.0'", "str"]),
    Case("reward-none", resume("rewards.none_reward=1.0"), ["reward 'none_reward'", "None"]),
    Case("reward-matrix", resume("rewards.matrix_reward=1.0"), ["reward 'matrix_reward'", "shape (4, 2)"]),
    Case("reward-raises", resume("rewards.raising_reward=1.0"), ["reward 'raising_reward'", "ZeroDivisionError"]),
    Case("loss-nan", resume("loss.name=bad_loss", "loss.mode=nan"), ["loss 'bad_loss'", "nan", "step 3"]),
    Case("loss-inf", resume("loss.name=bad_loss", "loss.mode=inf"), ["loss 'bad_loss'", "inf", "step 3"]),
    Case("loss-vector", resume("loss.name=bad_loss", "loss.mode=vector"), ["loss 'bad_loss'", "shape (4,)", "scalar"]),
    Case(
        "loss-bare-tensor", resume("loss.name=bad_loss", "loss.mode=bare"), ["loss 'bad_loss'", "tensor(", "LossOutput"]
    ),
    Case("loss-tuple", resume("loss.name=bad_loss", "loss.mode=tuple"), ["loss 'bad_loss'", "LossOutput"]),
    Case("loss-detached", resume("loss.name=bad_loss", "loss.mode=detached"), ["loss 'bad_loss'", "without gradient"]),
    Case("loss-metric", resume("loss.name=bad_loss", "loss.mode=metric"), ["loss 'bad_loss'", "'bad'"]),
    Case("loss-raises", resume("loss.name=bad_loss", "loss.mode=raises"), ["loss 'bad_loss'", "IndexError"]),
    Case("advantage-shape", resume("advantage.name=bad_advantage"), ["advantage 'bad_advantage'", "(4, 1)", "(4, 4)"]),
    Case(
        "advantage-nan",
        resume("advantage.name=bad_advantage", "advantage.mode=nan"),
        ["advantage 'bad_advantage'", "non-finite"],
    ),
    Case(
        "advantage-list",
        resume("advantage.name=bad_advantage", "advantage.mode=list"),
        ["advantage 'bad_advantage'", "tensor"],
    ),
    Case(
        "advantage-int",
        resume("advantage.name=bad_advantage", "advantage.mode=int"),
        ["advantage 'bad_advantage'", "int64"],
    ),
    Case(
        "advantage-raises",
        resume("advantage.name=bad_advantage", "advantage.mode=raises"),
        ["advantage 'bad_advantage'", "KeyError"],
    ),
    Case("task-empty", resume("task.name=bad_task"), ["task 'bad_task'", "no examples"]),
    Case(
        "task-short",
        resume("task.name=bad_task", "task.mode=short"),
        ["task 'bad_task'", "1 examples", "2 were requested"],
    ),
    Case("task-strings", resume("task.name=bad_task", "task.mode=strings"), ["task 'bad_task'", "rlsdk.Example"]),
    Case("task-answer", resume("task.name=bad_task", "task.mode=answer"), ["task 'bad_task'", "answer: str"]),
    Case("task-raises", resume("task.name=bad_task", "task.mode=raises"), ["task 'bad_task'", "ZeroDivisionError"]),
    Case(
        "task-no-eval",
        resume("task.name=bad_task", "task.mode=no_eval", "eval.every=1"),
        ["task 'bad_task'", "no examples"],
    ),
    Case("sampler-none", resume("sampler.name=none_sampler"), ["sampler 'none_sampler'", "RolloutBatch"]),
    Case(
        "tracker-raises",
        resume("trackers.broken_tracker={}"),
        ["tracker 'broken_tracker'", "tracker server unreachable"],
        writes=True,
    ),
    Case(
        "policy-factory",
        train("policy.name=broken_policy", "--plugin", "bad.py"),
        ["policy 'broken_policy'", "TypeError"],
    ),
    Case(
        "new-run-loss-nan",
        train("loss.name=bad_loss", "loss.mode=nan", "--plugin", "bad.py"),
        ["loss 'bad_loss'", "step 1"],
    ),
    Case("new-run-reward", train("rewards.short_reward=1.0", "--plugin", "bad.py"), ["reward 'short_reward'"]),
    Case(
        "hook-raises",
        ["train", "--resume", "RUN", "train.steps=3", "--plugin", "hook.py"],
        ["on_step_end", "plugin hook", "KeyError"],
        {"hook.py": HOOK_RAISES},
        writes=True,
    ),
    # -- plugins -----------------------------------------------------------------------------------
    Case("plugin-missing", train("--plugin", "nope.py"), ["'nope.py'", "does not exist"]),
    Case(
        "plugin-syntax",
        train("--plugin", "syntax.py"),
        ["syntax.py", "SyntaxError", "line 1"],
        {"syntax.py": "def f(:\n"},
    ),
    Case(
        "plugin-name-error",
        train("--plugin", "name.py"),
        ["name.py", "NameError", "line 2"],
        {"name.py": "import rlsdk\nfoo\n"},
    ),
    Case(
        "plugin-register-raises",
        train("--plugin", "reg.py"),
        ["reg.py", "boom"],
        {"reg.py": "import rlsdk\n@rlsdk.hookimpl\ndef register_losses(register):\n    raise RuntimeError('boom')\n"},
    ),
    Case(
        "plugin-clash",
        train("--plugin", "clash.py"),
        ["clash.py", "'grpo'", "two plugins"],
        {"clash.py": "import rlsdk\n@rlsdk.hookimpl\ndef register_advantages(register):\n    register('grpo', dict)\n"},
    ),
    Case(
        "plugin-unknown-hook",
        train("--plugin", "hookname.py"),
        ["hookname.py", "register_loss"],
        {"hookname.py": "import rlsdk\n@rlsdk.hookimpl\ndef register_loss(register):\n    pass\n"},
    ),
    Case(
        "load-plugins-misspelt",
        train(),
        ["RLSDK_LOAD_PLUGINS", "'rlsdk-nonexistent'"],
        env={"RLSDK_LOAD_PLUGINS": "rlsdk-nonexistent"},
    ),
    # -- eval ----------------------------------------------------------------------------------------
    Case("eval-missing", ["eval", "nowhere"], ["'nowhere'", "not a run folder"]),
    Case(
        "eval-no-checkpoint",
        ["eval", "RUN"],
        ["no checkpoint"],
        {"RUN/checkpoints/step_000002.pt": None, "RUN/checkpoints/latest": None},
    ),
    Case("eval-bad-override", ["eval", "RUN", "eval.size=-5"], ["eval.size", "-5"]),
    Case("eval-checkpoint-missing", ["eval", "RUN", "--checkpoint", "none.pt"], ["'none.pt'", "does not exist"]),
    # -- experiments, ablations, comparisons, sweeps, reports, reproduce -----------------------------------
    Case("experiment-missing", ["experiment", "none.yaml"], ["'none.yaml'", "does not exist"]),
    Case(
        "experiment-duplicate-arm",
        ["experiment", "exp.yaml"],
        ["'exp.yaml'", "'a'", "twice"],
        {"exp.yaml": "name: x\narms:\n  a: []\n  a: [train.lr=0.01]\n"},
    ),
    Case(
        "experiment-unknown-key",
        ["experiment", "exp.yaml"],
        ["'exp.yaml'", "'armz'"],
        {"exp.yaml": "name: x\narmz:\n  a: []\n"},
    ),
    Case(
        "experiment-bad-arm",
        ["experiment", "exp.yaml", "--out", "out"],
        ["train.lr", "nan"],
        {"exp.yaml": "name: x\narms:\n  a: [train.lr=nan]\n"},
    ),
    Case(
        "experiment-seeds",
        ["experiment", "exp.yaml", "--seeds", "a,b"],
        ["--seeds", "'a,b'"],
        {"exp.yaml": "name: x\narms:\n  a: []\n"},
    ),
    Case(
        "ablate-arms-file",
        ["ablate", "exp.yaml"],
        ["'exp.yaml'", "ablations"],
        {"exp.yaml": "name: x\narms:\n  a: []\n"},
    ),
    Case("compare-missing", ["compare", "nowhere"], ["'nowhere'", "not an experiment folder"]),
    Case("report-smooth-zero", ["report", "RUN", "--smooth", "0"], ["smooth", "0"]),
    Case("report-missing", ["report", "nowhere"], ["'nowhere'"]),
    Case("reproduce-missing", ["reproduce", "nowhere"], ["'nowhere'"]),
    Case("env-both", ["env", "RUN", "--check", "RUN"], ["either RUN_DIR", "--check"]),
]


@pytest.fixture(autouse=True)
def _fresh_registry():
    yield
    reset_registry()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished 2-step run with a checkpoint at step 2."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *FAST, "--no-progress", "--run-dir", str(run)]) == 0
    return run


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` -> a hash of its content ('' for folders)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(folder.rglob("*"))
    }


def _prepare(case: Case, tmp: Path, trained_run: Path) -> None:
    shutil.copytree(trained_run, tmp / "RUN")
    (tmp / "bad.py").write_text(BAD_PLUGIN)
    for name, content in case.files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.unlink()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif content.startswith("EDIT:"):  # "EDIT:old\n:new\n" replaces old by new in the file
            old, new = content[len("EDIT:") :].split("\n:", 1)
            text = path.read_text()
            assert old in text, (old, name)
            path.write_text(text.replace(old, new.rstrip("\n"), 1))
        else:
            path.write_text(content)


def test_the_catalogue_is_large_and_its_ids_unique():
    assert len(CASES) >= 100
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(case, tmp_path, trained_run, monkeypatch, capsys):
    _prepare(case, tmp_path, trained_run)
    monkeypatch.chdir(tmp_path)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    if case.env:
        reset_registry()  # rebuilt with the case's environment
    before = _snapshot(tmp_path)
    status = main(case.argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert status == case.status, err
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith(f"rlsdk {case.argv[0]}: error: "), lines[0]
    for text in case.expect:
        assert text in lines[0], f"{text!r} not in: {lines[0]}"
    assert "Traceback" not in err + out
    after = _snapshot(tmp_path)
    if case.writes:  # the step's row, config and manifest, but no checkpoint of it
        assert {k for k in after if "checkpoints/" in k} == {k for k in before if "checkpoints/" in k}
    else:
        assert after == before, "files changed"
