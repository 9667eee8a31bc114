"""Every public function refuses bad input by name, or returns a documented result.

Claim (bonmath.validation's module docstring, README "Bad input"): bad input raises
``ValueError`` or ``TypeError`` naming the argument; nothing is silently cast,
clipped or turned into NaN.

The test is generated. It walks every public function, class and method of the
modules in :data:`WALKED` (a test fails when a module of bonmath with an ``__all__`` is
neither walked nor listed in :data:`NOT_WALKED`; :data:`NOT_CALLED` excuses single names
that cannot be called cheaply), builds a valid call from the
parameter names (:data:`GENERIC`, then :data:`MODULE_ARGS`, :data:`ARGS` and
:data:`CALLS` for what names cannot say; a parameter nobody can build fails the test
with a message saying where to add it), and then gives every argument every mutation
of its kind (:func:`mutations`). A mutated call passes when it

* raises ``ValueError`` or ``TypeError`` whose message names the argument;
* or returns exactly what the equivalent valid call returns, for mutations that only
  relabel values in order (booleans for the 0/1 rewards, integers beyond 2^53, Python
  ints beyond int64, an exact Fraction in an object array, ±inf in place of a value
  below/above all others: the documented "only the order of rewards matters" rule);
* or, for an empty batch (every array argument given a leading axis of length 0),
  returns an empty result (the documented empty-batch rule; :data:`NO_BATCH_AXES`
  lists the functions without batch axes, and :data:`EMPTY_STRINGS_REFUSED` those whose
  token argument's first axis is a support, which must refuse it);
* or, for a bfloat16 tensor, returns the float64 call's result within RTOL_BFLOAT16;
* or is listed in :data:`VALID` (a documented valid result, each entry justified),
  and then returns a result without NaN.

RuntimeWarnings (numpy's ComplexWarning among them) are errors during the calls.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import math
import re
import warnings
from collections.abc import Callable
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import RTOL_BFLOAT16  # noqa: E402

import bonmath  # noqa: E402
from bonmath.tabular import TabularLM  # noqa: E402

WALKED = (
    "bonmath",
    "bonmath.theory",
    "bonmath.hf",
    "bonmath.estimators",
    "bonmath.estimator_moments",
    "bonmath.testing",
    "bonmath.enumeration",
    "bonmath.estimators_at_k",
    "bonmath.inference_aware",
    "bonmath.objectives",
    "bonmath.theory.injective",
    "bonmath.zoo",
    "bonmath.cli",
    "bonmath.cache",
    "bonmath.task",
    "bonmath.evaluation",
    "bonmath.estimator_evaluation",
    "bonmath.trl",
)
"""Modules whose public names are walked (``__all__``, or the public names a module
without ``__all__`` defines)."""

NOT_WALKED = {
    "bonmath.train": "the training harness: its inputs are a Task (an enumerated LM) and a "
    "TrainConfig, checked by TrainConfig; a call trains a model for seconds to minutes",
    "bonmath.experiment": "the experiment pipeline over bonmath.train; a call trains many models",
    "bonmath.sentiment": "loads the review LM and VADER from disk (optional dependencies)",
    "bonmath.trl_sentiment": "trains a policy with TRL for minutes (main, train_vbon_sentiment); its "
    "config is checked by bonmath.cli.parse_config",
    "bonmath.trl_audit": "builds tiny models on disk and runs TRL trainers for seconds per call",
    "bonmath.trl_audit.models": "part of bonmath.trl_audit: builds and saves tiny GPT-2 models on disk",
    "bonmath.trl_audit.targets": "part of bonmath.trl_audit: its inputs are the audit's enumerated pair "
    "and TinySetup (tests/test_trl_gradients.py)",
    "bonmath.trl_audit.cases": "part of bonmath.trl_audit: the configuration grid and its targets "
    "(tests/test_trl_gradients.py)",
    "bonmath.trl_audit.vbon": "part of bonmath.trl_audit: builds the vBoN problem of a TinySetup",
    "bonmath.trl_audit.run": "part of bonmath.trl_audit: runs TRL trainers for seconds per call",
    "bonmath.trl_audit.statistics": "part of bonmath.trl_audit: its inputs are TRL gradient draws and "
    "completion counts (tests/test_trl_gradients.py)",
    "bonmath.trl_audit.report": "part of bonmath.trl_audit: renders and merges the audit's results JSON "
    "(tests/test_trl_gradients.py)",
    "bonmath.estimator_benchmark": "the benchmark driver: run, build_basis and estimate_cost take a "
    "checked EstimatorBenchmarkConfig and run for seconds",
    "bonmath.inference_aware_variance": "the variance benchmark driver: run takes a checked "
    "VarianceConfig and runs for seconds",
    "bonmath.seed_study": "the seed-study driver: run_seed_study takes a checked SeedStudyConfig and "
    "trains many models (bonmath and TRL) for minutes",
    "bonmath.trl_task": "trains a policy with TRL (train_trl_vbon) on a Task and a VBoNConfig, both "
    "checked; a call runs for seconds to minutes",
}
"""Public modules not walked, and why."""

CONTAINERS = {
    "BondDivergences": "the NamedTuple bond_divergences returns",
    "Moments": "the dataclass exact_moments returns",
    "EnumeratedPair": "the dataclass enumerate_*_pair return",
    "Support": "the dataclass bonmath.testing.supports() draws",
    "InfAlignBestT": "the NamedTuple infalign_best_t returns",
    "TrueRewardCurves": "the NamedTuple true_reward_curves returns",
    "GoodnessOfFit": "the dataclass goodness_of_fit returns",
    "InjectiveFormulaError": "the dataclass injective_formula_error returns",
    "EstimatorEvaluation": "the dataclass evaluate_estimator returns",
    "FrontPosition": "the dataclass front_positions returns",
    "Frontier": "the dataclass exact_frontier returns",
    "PolicyMetrics": "the dataclass policy_metrics returns",
    "SampleKLEstimates": "the dataclass of sampled KL estimates in bonmath.evaluation",
    "PolicyPair": "the dataclass the zoo's pair builders return",
}
"""Result containers: plain records of computed values, not walked."""

NOT_CALLED = {
    "ExactEvaluationCallback": "a TrainerCallback: its arguments are a running TRL trainer",
    "write_once": "writes to the file system: a mutated path would write into the working directory",
}
"""Public names of walked modules that cannot be called cheaply, and why."""


# ------------------------------------------------------------------ valid arguments

REF = (0.5, 0.25, 0.25)
POLICY = (0.25, 0.25, 0.5)


def _log(values, xp=np):
    if xp is torch:
        return torch.log(torch.tensor(values, dtype=torch.float64))
    return np.log(np.asarray(values, dtype=np.float64))


def _n(annotation: str) -> float | int:
    """4 draws: an int where the annotation says int, else a float."""
    return 4 if "int" in annotation and "float" not in annotation else 4.0


GENERIC: dict[str, Callable[[str], Any]] = {
    "ref_log_probs": lambda a: _log(REF),
    "policy_log_probs": lambda a: _log(POLICY),
    "p_log_probs": lambda a: _log(POLICY),
    "q_log_probs": lambda a: _log(REF),
    "log_probs": lambda a: _log(REF),
    "rewards": lambda a: np.array([0, 1, 1]),
    "reference_rewards": lambda a: np.array([0, 1, 1, 0]),
    "rng": lambda a: 0,
    "n": _n,
    "beta": lambda a: 0.5,
    "chi2_coefficient": lambda a: 0.5,
    "log_ref_weight": lambda a: 0.5,
    "temperature": lambda a: 1.0,
    "mu": lambda a: 1.0,
    "alpha": lambda a: 2.0,
    "c": lambda a: 1.0,
    "kl": lambda a: 0.1,
    "num_ref_samples": lambda a: 4,
    "k": lambda a: 4,
    "size": lambda a: 3,
    "proxy_rewards": lambda a: np.array([0, 1, 2]),
    "true_rewards": lambda a: np.array([0.0, 1.0, 0.5]),
    "anchor_rewards": lambda a: np.array([0, 1, 1, 0]),
    "anchor_log_probs": lambda a: _log(POLICY),
    "n_max": lambda a: 4,
    "ns": lambda a: [1, 2, 4],
    "sample_indices": lambda a: np.array([0, 1, 2, 2]),
}
"""Valid arguments derived from the parameter name (given its annotation): a small
normalised support of k = 3 strings with tied integer rewards."""


class Elementwise(NamedTuple):
    """An array argument without a support axis (every axis is a batch axis)."""

    value: Any


def _tiny_lm(xp=np) -> TabularLM:
    tables = [np.log(np.full((1, 3), 1 / 3)), np.log(np.array([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]))]
    if xp is torch:
        tables = [torch.tensor(t) for t in tables]
    return TabularLM(tables)


@lru_cache(maxsize=1)
def _gpt2_pair():
    from bonmath.zoo import tiny_gpt2_policy_pair

    policy, ref = tiny_gpt2_policy_pair(vocab_size=4, max_new_tokens=2, seed=0)
    return policy, ref


def _causal_policy():
    from bonmath.hf import CausalLMPolicy

    return CausalLMPolicy(_gpt2_pair()[1].model, [1, 2], 2)


def _enumeration():
    from bonmath import Enumeration

    return Enumeration(np.array([[0, -1], [1, 2], [1, -1]]), _log(REF))


def _samples(values):
    return torch.tensor(values, dtype=torch.float64)


@dataclasses.dataclass
class _Config:
    """A script's configuration, for bonmath.cli."""

    draws: int = 4


def _cli_config():
    from bonmath.cli import option

    @dataclasses.dataclass
    class Config:
        """A script's configuration."""

        draws: int = option("number of draws", 4, minimum=1)
        mode: str = option("how to draw", "exact", choices=("exact", "bound"))

    return Config


def _integer_rewards(text, prompt_ids, sequences):
    return np.array([list(s).count(1) - list(s).count(2) for s in sequences], dtype=np.float64)


@lru_cache(maxsize=1)
def _task():
    from bonmath.task import Task

    return Task(_gpt2_pair()[1].model, [("prompt", [1, 2])], 2, _integer_rewards, eos_token_id=3)


def _task_log_probs():
    return _task().ref_log_probs.copy()


def _trl_reward(prompts, completions, completion_ids, **kwargs):
    return [float(ids[0]) if ids else 0.0 for ids in completion_ids]


@lru_cache(maxsize=1)
def _tabular_policy_pair():
    from bonmath.zoo import tabular_pair

    return tabular_pair(3, 2, 0)


def _vbon_reward():
    from bonmath.trl import VBoNReward

    return VBoNReward(_trl_reward, 4, reference_rewards={"p": [0.0, 1.0, 1.0, 3.0]})


def _evaluate_estimator_call():
    logits = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64, requires_grad=True)
    policy = torch.log_softmax(logits, 0)
    ref = _log((0.5, 0.3, 0.2), torch)
    target = bonmath.estimators.exact_gradient("vbon", policy, ref, [logits], rewards=[0.0, 1.0, 1.0], n=4)
    score = bonmath.estimator_moments.per_output_gradients(policy, [logits])
    value = (policy - bonmath.bon_log_probs(ref, [0.0, 1.0, 1.0], 4)).detach()
    return {"target": target, "probs": policy.exp().detach(), "k": 4, "score": score, "value": value,
            "baseline": "mean"}


def _policy_metrics():
    from bonmath.evaluation import policy_metrics

    return policy_metrics(_task(), _task_log_probs(), ns=(2.0,), num_samples=8, rng=0)


def _exact_frontier():
    from bonmath.evaluation import exact_frontier

    return exact_frontier(_task(), [0.5, 1.0])


MODULE_ARGS: dict[str, dict[str, Callable[[], Any]]] = {
    "bonmath.estimators": {  # values at k = 3 samples (tokens: k = 2 sequences of T = 2)
        "policy_log_probs": lambda: _log((0.2, 0.3, 0.5), torch),
        "target_log_probs": lambda: _log((0.25, 0.25, 0.5), torch),
        "ref_log_probs": lambda: _log((0.5, 0.25, 0.25), torch),
        "log_ratio": lambda: _samples([0.1, -0.2, 0.3]),
        "log_cdf_lt": lambda: _log((0.2, 0.5, 0.7), torch),
        "values": lambda: _samples([1.0, 2.0, 6.0]),
        "rewards": lambda: _samples([0.0, 1.0, 1.0]),
        "token_log_probs": lambda: _log(((0.5, 0.25), (0.2, 1.0)), torch),
        "ref_token_log_probs": lambda: _log(((0.25, 0.5), (0.4, 1.0)), torch),
        "mask": lambda: torch.tensor([[True, True], [True, False]]),
        "token_dists": lambda: torch.log_softmax(_samples([[[0.0, 1.0, 2.0]] * 2] * 2), -1),
        "ref_token_dists": lambda: torch.log_softmax(_samples([[[1.0, 0.0, 0.0]] * 2] * 2), -1),
        "estimator": lambda: "k1",
        "objective": lambda: "vbon",
        "lm": lambda: _tiny_lm(torch),
        "sequences": lambda: np.array([[0, -1], [1, 2]]),
    },
    "bonmath.estimator_moments": {  # S = 3 strings, P = 2 parameters, T = 2 tokens
        "probs": lambda: _samples([0.5, 0.25, 0.25]),
        "v": lambda: _samples([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
        "s": lambda: _samples([[0.5, -1.0], [-1.0, 0.5], [0.0, 1.0]]),
        "f_mean": lambda: _samples([0.0, 1.0, 2.0]),
        "f_second": lambda: _samples([[0.0, 0.0, 0.0], [0.0, 1.0, 2.0], [0.0, 2.0, 4.0]]),
        "baseline": lambda: "loo",
        "index": lambda: torch.tensor([[0, 1], [2, 2]]),
        "f_values": lambda: _samples([[0.0, 1.0], [2.0, 2.0]]),
        "num_strings": lambda: 3,
        "placement": lambda: "k1_reward",
        "token_scores": lambda: _samples([[[1.0, 0.0], [0.0, 1.0]]] * 3),
        "mask": lambda: torch.tensor([[True, True], [True, False], [True, True]]),
        "token_log_ratio": lambda: _samples([[0.1, 0.2], [0.3, 0.0], [-0.1, 0.1]]),
        "log_cdf_lt": lambda: _log((0.2, 0.5, 0.7), torch),
        "outputs": lambda: _samples([1.0, 2.0]),
        "params": lambda: [torch.zeros(2, dtype=torch.float64, requires_grad=True)],
        "policy": lambda: _tiny_lm(torch),
        "ref": lambda: _tiny_lm(torch),
    },
    "bonmath.estimators_at_k": {
        "k": lambda: 2,
        "probs": lambda: _samples([0.5, 0.25, 0.25]),
        "rewards": lambda: _samples([0.0, 1.0, 1.0]),
        "scores": lambda: _samples([[0.5, -1.0], [-1.0, 0.5], [0.0, 1.0]]),
        "weight_fn": lambda: (lambda g: bonmath.estimators.pkpo_weights(g, 2)),
        "n": lambda: 3,
    },
    "bonmath.enumeration": {
        "sequences": lambda: np.array([[0, -1], [1, 2], [1, -1]]),
        "log_probs": lambda: _log(REF),
        "enumerations": lambda: [_enumeration(), _enumeration()],
        "policy": lambda: _tiny_lm(),
        "reference": lambda: _tiny_lm(),
        "named": lambda: {"policy_log_probs": _enumeration(), "ref_log_probs": _enumeration()},
        "batch_index": lambda: 0,
        "strings": lambda: np.array([[1, 2], [0, -1]]),
    },
    "bonmath.zoo": {
        "vocab_size": lambda: 3,
        "max_len": lambda: 2,
        "max_new_tokens": lambda: 2,
        "seed": lambda: 0,
        "kind": lambda: "tabular",
        "length": lambda: 2,
        "pair": lambda: _tabular_policy_pair().pair,
        "prompt": lambda: (1, 2),
    },
    "bonmath.cli": {
        "config_cls": _cli_config,
        "argv": lambda: ["--draws", "3"],
        "help": lambda: "number of draws",
        "doc": lambda: "A *doc* string.",
        "prog": lambda: "script",
        "description": lambda: "what it does",
    },
    "bonmath.cache": {
        "header": lambda: {"n": 4},
        "arrays": lambda: [np.arange(3.0)],
        "cls": lambda: _Config,
        "data": lambda: {"draws": 4},
        "name": lambda: "numpy",
        "value": lambda: _Config(),
    },
    "bonmath.task": {
        "model": lambda: _gpt2_pair()[1].model,
        "prompts": lambda: [("prompt", [1, 2])],
        "max_new_tokens": lambda: 2,
        "rewards": lambda: _integer_rewards,
        "eos_token_id": lambda: 3,
        "log_probs": _task_log_probs,
        "size": lambda: 3,
        "rng": lambda: np.random.default_rng(0),
        "prompt": lambda: 0,
        "continuations": lambda: [(3,), (1, 3)],
        "n": lambda: 4.0,
    },
    "bonmath.evaluation": {
        "task": _task,
        "log_probs": _task_log_probs,
        "betas": lambda: [0.5, 1.0],
        "ns": lambda: (2.0,),
        "num_samples": lambda: 8,
        "cost": lambda: [0.1, 0.2, 0.3],
        "gain": lambda: [1.0, 0.5, 2.0],
        "metrics": lambda: [_policy_metrics()],
        "frontier": _exact_frontier,
        "metric": lambda: "reward",
    },
    "bonmath.estimator_evaluation": {},
    "bonmath.trl": {
        "reward_fn": lambda: _trl_reward,
        "n": lambda: 4.0,
        "reference_rewards": lambda: {"p": [0.0, 1.0, 1.0, 3.0]},
        "prompts": lambda: ["p", "p"],
        "completions": lambda: ["a", "b"],
        "completion_ids": lambda: [[1, 2], [3]],
        "rewards": lambda: np.array([0.0, 1.0, 1.0]),
        "prompt": lambda: "p",
        "model": lambda: torch.nn.Linear(1, 1),  # a fresh module each call: the hook stays on it
    },
    "bonmath.testing": {
        "sequences": lambda: np.array([[0, -1], [1, 2], [1, -1]]),
        "samples": lambda: np.array([[1, 2], [0, -1]]),
        "probs": lambda: [Fraction(1, 2), Fraction(1, 4), Fraction(1, 4)],
        "p": lambda: [Fraction(1, 4), Fraction(1, 4), Fraction(1, 2)],
        "q": lambda: [Fraction(1, 2), Fraction(1, 4), Fraction(1, 4)],
        "n": lambda: 2,
        "log_probs": lambda: [math.log(0.5), math.log(0.25), math.log(0.25)],
        "vocab_size": lambda: 4,
        "max_new_tokens": lambda: 2,
        "seed": lambda: 0,
    },
    "bonmath.hf": {
        "model": lambda: _gpt2_pair()[1].model,
        "prompt_ids": lambda: [1, 2],
        "max_new_tokens": lambda: 2,
        "sequences": lambda: [(3,), (1, 3), (1, 2)],
        "generator": lambda: torch.Generator().manual_seed(0),
        "eos_token_id": lambda: 3,
        "top_k": lambda: 2,
    },
    "bonmath.tabular": {
        "next_log_probs": lambda: _tiny_lm().tables,
        "logits": lambda: [np.zeros((1, 3)), np.zeros((2, 3))],
        "vocab_size": lambda: 3,
        "max_len": lambda: 2,
        "sequences": lambda: np.array([[0, -1], [1, 2]]),
    },
}
"""Valid arguments by parameter name within one module (keyed by the defining module)."""

ARGS: dict[tuple[str, str], Callable[[], Any]] = {
    ("bon_log_ratio_from_cdf", "log_cdf_lt"): lambda: Elementwise(_log((0.25, 0.5))),
    ("bon_log_ratio_from_cdf", "log_level_mass"): lambda: Elementwise(_log((0.25, 0.25))),
    ("log_cdf_estimate_moments", "log_cdf"): lambda: Elementwise(_log((0.25, 0.5))),
    ("log_cdf_estimate_bias", "log_cdf"): lambda: Elementwise(_log((0.25, 0.5))),
    ("beirami_kl_estimate", "eps"): lambda: Elementwise(np.array([0.5, 0.25])),
    ("bonbon_kl", "c"): lambda: Elementwise(np.array([1.0, 0.5])),
    ("bonbon_win_rate", "c"): lambda: Elementwise(np.array([1.0, 0.5])),
    ("per_output_gradients", "outputs"): lambda: Elementwise(_samples([1.0, 2.0])),
    ("jbond_anchor_reward", "anchor_rewards"): lambda: np.array([[0, 1], [1, 1], [0, 0]]),
    ("goodness_of_fit", "sample_indices"): lambda: np.array([0] * 20 + [1] * 10 + [2] * 10),
    ("bon_sampler_test", "sample_indices"): lambda: np.array([0] * 6 + [1] * 17 + [2] * 17),
    ("injective_formula_error", "bon_log_probs"): lambda: np.log(np.array([0.25, 0.375, 0.375])),
    ("gpt2_pair", "vocab_size"): lambda: 4,
    ("tiny_gpt2_policy_pair", "vocab_size"): lambda: 4,
    ("Task.policy", "model"): lambda: _gpt2_pair()[0].model,
    ("Task.enumerate_log_probs", "model"): lambda: _gpt2_pair()[0].model,
}
"""Valid arguments for one (function, parameter)."""


def _exact_gradient_call():
    logits = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    return {
        "objective": "vbon",
        "policy_log_probs": torch.log_softmax(logits, 0),
        "ref_log_probs": _log(REF, torch),
        "params": [logits],
        "rewards": _samples([0.0, 1.0, 1.0]),
        "n": 4.0,
    }


def _flat_gradient_call():
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    return {"loss": (x**2).sum(), "params": [x]}


def _per_output_gradients_call():
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    return {"outputs": Elementwise(x**2), "params": [x]}


def _exact_moments_call():
    args = {name: MODULE_ARGS["bonmath.estimator_moments"][name]() for name in ("probs", "v", "s", "f_mean")}
    return {**args, "k": 3, "baseline": "loo"}


def _fresh_gpt2_pair():
    from bonmath.hf import CausalLMPolicy

    policy, ref = _gpt2_pair()
    return (CausalLMPolicy(policy.model, policy.prompt_ids.tolist(), 2, top_k=3),
            CausalLMPolicy(ref.model, ref.prompt_ids.tolist(), 2))


def _pair_scores_call():
    case = _tabular_policy_pair()
    return {"pair": case.pair, "params": case.params, "keep": torch.arange(case.pair.policy_log_probs.shape[-1])}


CALLS: dict[str, Callable[[], dict[str, Any]]] = {
    "pair_scores": _pair_scores_call,
    "evaluate_estimator": _evaluate_estimator_call,
    "VBoNReward.__call__": lambda: {"prompts": ["p", "p"], "completions": ["a", "b"], "completion_ids": [[1, 2], [3]]},
    "exact_gradient": _exact_gradient_call,
    "objective_loss": lambda: {k: v for k, v in _exact_gradient_call().items() if k != "params"},
    "flat_gradient": _flat_gradient_call,
    "per_output_gradients": _per_output_gradients_call,
    "exact_moments": _exact_moments_call,
    "enumerate_causal_lm_pair": lambda: dict(zip(("policy", "ref"), _fresh_gpt2_pair())),
}
"""Whole valid calls, for functions whose arguments depend on each other."""


INSTANCES: dict[str, Callable[[], Any]] = {
    "TabularLM": _tiny_lm,
    "CausalLMPolicy": _causal_policy,
    "Enumeration": _enumeration,
    "Enumeration.row": lambda: bonmath.Enumeration.stack([_enumeration(), _enumeration()]),
    "Task": _task,
    "VBoNReward": _vbon_reward,
}
"""An instance of each walked class, for its methods."""


# ------------------------------------------------------------------------ targets


class Target(NamedTuple):
    name: str
    module: str
    get: Callable[[], Callable]


def _public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [
        name for name, obj in vars(module).items()
        if not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__
    ]


@lru_cache(maxsize=1)
def targets() -> tuple[Target, ...]:
    """Every public function, class and method of the walked modules, once each."""
    found: dict[str, Target] = {}
    for module_name in WALKED:
        module = importlib.import_module(module_name)
        for name in _public_names(module):
            obj = getattr(module, name)
            if name in found or name in CONTAINERS or name in NOT_CALLED or not callable(obj):
                continue
            found[name] = Target(name, obj.__module__, lambda obj=obj: obj)
            if inspect.isclass(obj):
                for method, member in vars(obj).items():
                    if (method.startswith("_") and method != "__call__") or isinstance(member, property):
                        continue
                    if isinstance(member, (classmethod, staticmethod)):
                        get = lambda obj=obj, method=method: getattr(obj, method)  # noqa: E731
                    elif inspect.isfunction(member):
                        get = lambda name=name, method=method: getattr(_instance(name, method), method)  # noqa: E731
                    else:
                        continue
                    if f"{name}.{method}" not in NOT_CALLED:
                        found[f"{name}.{method}"] = Target(f"{name}.{method}", obj.__module__, get)
    return tuple(found.values())


def _instance(class_name: str, method: str):
    if f"{class_name}.{method}" in INSTANCES:  # a method that needs a particular instance
        return INSTANCES[f"{class_name}.{method}"]()
    if class_name not in INSTANCES:
        pytest.fail(f"add a factory for {class_name} to INSTANCES in tests/test_bad_input.py")
    return INSTANCES[class_name]()


def _parameters(target: Target) -> list[inspect.Parameter]:
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p for p in inspect.signature(target.get()).parameters.values() if p.kind not in kinds]


def base_arguments(target: Target) -> dict[str, Any]:
    """A valid call of ``target`` as keyword arguments (values may be :class:`Elementwise`)."""
    whole = CALLS[target.name]() if target.name in CALLS else {}
    module_args = MODULE_ARGS.get(target.module, {})
    out = {}
    for p in _parameters(target):
        annotation = str(p.annotation)
        if p.name in whole:
            out[p.name] = whole[p.name]
        elif (target.name, p.name) in ARGS:
            out[p.name] = ARGS[target.name, p.name]()
        elif p.name in module_args:
            out[p.name] = module_args[p.name]()
        elif p.name in GENERIC:
            out[p.name] = GENERIC[p.name](annotation)
        elif p.default is not inspect.Parameter.empty:
            out[p.name] = p.default
        else:
            pytest.fail(
                f"{target.name}: no valid value for parameter {p.name!r}; add it to GENERIC, "
                f"MODULE_ARGS[{target.module!r}], ARGS or CALLS in tests/test_bad_input.py"
            )
    return out


def _unwrap(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v.value if isinstance(v, Elementwise) else v for k, v in kwargs.items()}


# ---------------------------------------------------------------------- mutations


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray) or isinstance(x, torch.Tensor)


def _host(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _like(x, values: np.ndarray):
    """``values`` as the kind (numpy or tensor) of ``x``."""
    return torch.as_tensor(values) if isinstance(x, torch.Tensor) else values


def _with_first(x, value):
    y = _host(x).astype(np.float64 if _host(x).dtype.kind != "f" else _host(x).dtype)
    y.reshape(-1)[0] = value
    return _like(x, y)


def _dense_rank(x) -> np.ndarray:
    return np.unique(_host(x), return_inverse=True)[1].reshape(_host(x).shape)


def _object_with_fraction(x):
    """An object array whose first entry is the exact Fraction of its value (same order)."""
    y = _host(x).astype(object)
    y.reshape(-1)[0] = Fraction(float(y.reshape(-1)[0]))
    return y


def _concat(x, extra):
    if isinstance(x, torch.Tensor):
        return torch.cat([x, extra], -1)
    return np.concatenate([x, extra], -1)


def _tile(x, times: int):
    """``times`` copies of ``x`` along a new leading axis (a tensor keeps its graph)."""
    if isinstance(x, torch.Tensor):
        return x.unsqueeze(0).repeat(times, *[1] * x.ndim)
    return np.repeat(np.asarray(x)[None], times, axis=0)


class Mutation(NamedTuple):
    name: str
    kwargs: dict[str, Any]
    equivalent: dict[str, Any] | None = None
    """A valid call the mutated call must equal when it does not raise."""
    involved: tuple[str, ...] = ()
    """Other arguments changed with it (a batch mutation): an error may name any of them."""


ARRAY_MUTATIONS = (
    "nan", "+inf", "-inf", "string", "numeric strings", "none", "bool", "empty batch",
    "empty support", "wrong support", "wrong batch", "complex", "object", "bfloat16",
    "int beyond 2^53", "python int beyond int64",
)
SCALAR_MUTATIONS = ("nan", "+inf", "-inf", "numeric string", "bool", "none", "negative", "zero",
                    "complex", "array")
OPTION_MUTATIONS = ("unknown option", "none", "number", "bool")
FLAG_MUTATIONS = ("string", "none", "number")
OBJECT_MUTATIONS = ("none", "string", "number")
RNG_MUTATIONS = ("negative seed", "string", "float", "bool", "nan")
FRACTION_MUTATIONS = ("nan", "negative", "unnormalised", "float", "string", "none", "empty", "wrong support")
TOKEN_MUTATIONS = ("float ids", "id outside the vocabulary", "negative id", "string", "none", "bool",
                   "empty batch", "too many axes")
RNG_NAMES = ("rng", "seed")
TOKEN_NAMES = ("sequences", "prompt_ids")


def _array_mutation(name: str, x, param: str, base: dict[str, Any]) -> Mutation | None:
    def call(new_value, /, **others):  # positional: a parameter may be called "value"
        return {**base, param: new_value, **others}

    elementwise = isinstance(base[param], Elementwise) or x.ndim == 0
    partners = [k for k, v in base.items() if k != param and _is_array(_unwrap({k: v})[k])]
    others = [_host(_unwrap(base)[k]).astype(np.float64) for k in partners]
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in [_host(x).astype(np.float64), *others]])
    above_others = math.floor(max((a[np.isfinite(a)].max() for a in others if np.isfinite(a).any()), default=0)) + 1
    if name == "object":
        return Mutation(name, call(_object_with_fraction(x)), base)
    if name in ("nan", "complex", "string", "none", "numeric strings"):
        value = {
            "nan": lambda: _with_first(x, math.nan),
            "complex": lambda: _host(x).astype(np.complex128) + 0j,
            "string": lambda: "abc",
            "none": lambda: None,
            "numeric strings": lambda: _host(x).astype(str),
        }[name]()
        return Mutation(name, call(value))
    if name in ("+inf", "-inf"):
        sign = 1 if name == "+inf" else -1
        stand_in = finite.max() + 1 if sign > 0 else finite.min() - 1  # above (below) every value
        return Mutation(name, call(_with_first(x, sign * math.inf)), call(_with_first(x, stand_in)))
    if name == "bool":
        values = _host(x)
        if len(np.unique(values)) != 2:
            return Mutation(name, call(_like(x, values != values)))
        return Mutation(name, call(_like(x, values > values.min())), base)
    if name == "empty batch":  # every array gets a leading axis of length 0
        emptied = {k: _tile(_unwrap(base)[k], 0) for k in partners}
        return Mutation(name, call(_tile(x, 0), **emptied), involved=tuple(partners))
    if name == "empty support":
        return None if elementwise else Mutation(name, call(x[..., :0]))
    if name in ("wrong support", "wrong batch"):
        if not partners:
            return None  # a shape mismatch needs a second array
        if name == "wrong support":
            return Mutation(name, call(_concat(x, x[..., -1:])))
        tiled = {k: _tile(_unwrap(base)[k], 3) for k in partners}
        return Mutation(name, call(_tile(x, 2), **tiled), involved=tuple(partners))
    if name == "bfloat16":
        return Mutation(name, call(torch.as_tensor(_host(x).astype(np.float64)).to(torch.bfloat16)))
    if name in ("int beyond 2^53", "python int beyond int64"):  # the same order as small ints above the others
        rank = _dense_rank(x).astype(np.int64)
        huge = _like(x, 2**53 + rank) if name == "int beyond 2^53" else np.asarray(2**70 + rank.astype(object)).tolist()
        return Mutation(name, call(huge), call(_like(x, above_others + rank)))
    raise AssertionError(name)


def _scalar_value(name: str, x):
    """The mutated value of a scalar, option, flag, object or rng argument ``x``."""
    fixed = {
        "nan": math.nan, "+inf": math.inf, "-inf": -math.inf, "bool": True, "none": None,
        "unknown option": "no_such_option", "number": 1, "string": "abc", "negative seed": -1,
        "float": 1.5,
    }
    if name in fixed:
        return fixed[name]
    return {
        "numeric string": lambda: str(x), "negative": lambda: -abs(x) - 1, "zero": lambda: type(x)(0),
        "complex": lambda: complex(x, 1.0), "array": lambda: np.array([x, x]),
    }[name]()


def _fraction_value(name: str, x: list):
    return {
        "nan": [math.nan, *x[1:]], "negative": [Fraction(-1, 4), Fraction(3, 4), *x[2:]],
        "unnormalised": [Fraction(1, 2)] * len(x), "float": [float(v) for v in x], "string": "abc",
        "none": None, "empty": [], "wrong support": [*x, Fraction(0)],
    }[name]


def _token_value(name: str, x):
    host = np.asarray(x, dtype=object) if not isinstance(x, np.ndarray) else x
    as_list = isinstance(x, list)

    def back(values):
        return [tuple(row) for row in values.tolist()] if as_list and values.ndim == 2 else (
            values.tolist() if as_list else values)

    if name == "empty batch":
        if as_list:
            return []
        return np.zeros((0,) + host.shape[1:], dtype=np.int64)
    if as_list and host.ndim == 1 and isinstance(x[0], tuple):  # ragged continuations
        first = list(x[0])
        return {
            "float ids": [tuple(float(t) for t in first), *x[1:]],
            "id outside the vocabulary": [(99,), *x[1:]],
            "negative id": [(-2,), *x[1:]],
            "string": "abc", "none": None, "bool": [(True,), *x[1:]],
            "too many axes": [[first], *x[1:]],
        }[name]
    ints = np.asarray(host, dtype=np.int64)
    return {
        "float ids": back(ints + 0.5),
        "id outside the vocabulary": back(np.where(ints >= 0, 99, ints)),
        "negative id": back(np.full_like(ints, -2)),
        "string": "abc", "none": None, "bool": back(ints > 0),
        "too many axes": back(ints[None]),
    }[name]


def kind_of(param: str, value) -> str:
    if param in RNG_NAMES:
        return "rng"
    if param in TOKEN_NAMES:
        return "tokens"
    value = value.value if isinstance(value, Elementwise) else value
    if isinstance(value, (bool, np.bool_)):
        return "flag"
    if isinstance(value, str):
        return "option"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "scalar"
    if _is_array(value):
        return "array"
    if isinstance(value, list) and value and all(isinstance(v, Fraction) for v in value):
        return "fractions"
    return "object"


def mutations(target: Target, base: dict[str, Any]) -> list[tuple[str, Mutation]]:
    """Every (parameter, mutation) of a valid call ``base``."""
    defaults = {p.name: p.default for p in _parameters(target)}
    out = []
    for param, value in base.items():
        kind = kind_of(param, value)
        x = value.value if isinstance(value, Elementwise) else value
        names = {"array": ARRAY_MUTATIONS, "scalar": SCALAR_MUTATIONS, "option": OPTION_MUTATIONS,
                 "flag": FLAG_MUTATIONS, "object": OBJECT_MUTATIONS, "rng": RNG_MUTATIONS,
                 "fractions": FRACTION_MUTATIONS, "tokens": TOKEN_MUTATIONS}[kind]
        for name in names:
            if kind == "array":
                if name == "none" and defaults.get(param) is None:
                    continue  # None is the default: valid by definition
                mutation = _array_mutation(name, x, param, base)
            elif kind == "fractions":
                mutation = Mutation(name, {**base, param: _fraction_value(name, x)})
            elif kind == "tokens":
                mutation = Mutation(name, {**base, param: _token_value(name, x)})
            else:
                mutated = _scalar_value(name, x)
                if _same_value(mutated, defaults.get(param, inspect.Parameter.empty)):
                    continue  # the default is valid by definition
                mutation = Mutation(name, {**base, param: mutated})
            if mutation is not None:
                out.append((param, mutation))
    return out


def _same_value(a, b) -> bool:
    if b is inspect.Parameter.empty or type(a) is not type(b):
        return False
    return a is b or (isinstance(a, (int, float, str)) and a == b)


# -------------------------------------------------------------- expected outcomes

VALID: dict[tuple[str, str, str], str] = {
    ("bon_sampler_test", "sample_indices", "wrong support"): "any number of draws is a valid sample",
    ("goodness_of_fit", "sample_indices", "wrong support"): "any number of draws is a valid sample",
    # log F = -inf is F = 0, a legal CDF value (the lowest level; a zero-mass level).
    ("bon_log_ratio_from_cdf", "log_cdf_lt", "-inf"): "F_lt = 0: the lowest level, R = (n-1) log q",
    ("bon_log_ratio_from_cdf", "log_level_mass", "-inf"): "q = 0: the limit log(n F_lt^(n-1))",
    ("log_cdf_estimate_moments", "log_cdf", "-inf"): "F = 0: every count is 0",
    ("log_cdf_estimate_bias", "log_cdf", "-inf"): "F = 0: add-one's bias is +inf",
    # Rewards used as numbers: -inf is allowed where it is documented.
    ("kl_rl_objective", "rewards", "-inf"): "E[r] = -inf: a -inf reward the policy reaches",
    ("tilted_log_probs", "rewards", "-inf"): "the tilt gives a -inf reward zero mass",
    # Documented infinite or zero parameters.
    ("renyi_divergence", "alpha", "+inf"): "D_inf = log max p/q",
    ("bon_renyi_upper_bound", "alpha", "+inf"): "the bound log n",
    ("bonbon_kl", "c", "+inf"): "KL(inf) = +inf: the limit c -> inf",
    ("bonbon_win_rate", "c", "+inf"): "W(inf) = 1",
    ("bonbon_tilt_log_probs", "c", "zero"): "c = 0 returns π_ref",
    ("best_of_poisson_log_probs", "mu", "zero"): "μ = 0: one draw, π_ref",
    ("bonbon_c_for_kl", "kl", "zero"): "kl = 0 at c = 0",
    ("bonbon_tilt_c_for_kl", "kl", "zero"): "kl = 0 at c = 0",
    ("bond_divergences", "backward_weight", "zero"): "β = 0: the forward KL",
    ("regularized_bon_log_probs", "log_ref_weight", "zero"): "β = 0: plain BoN",
    ("regularized_bon_log_probs", "log_ref_weight", "negative"): "β < 0 penalises likely strings",
    ("released_exact_mode_optimum", "beta", "none"): "None is the default 1/(n-1)",
    ("sample_bon", "size", "zero"): "no samples: an empty result",
    ("estimate_log_cdf", "reference_rewards", "wrong support"): "M reference samples, k rewards: any M",
    ("estimate_log_cdf", "rewards", "wrong support"): "M reference samples, k rewards: any k",
    ("TabularLM.sample", "size", "zero"): "no samples: an empty result",
    ("TabularLM.random", "eos_logit", "negative"): "any finite logit offset (lower: longer strings)",
    ("CausalLMPolicy.sample", "size", "zero"): "no samples: an empty list",
    ("advantages", "eps", "zero"): "eps = 0 divides by the bare standard deviation",
    ("reward_surrogate", "eps", "zero"): "as advantages",
    ("analytic_token_kl", "token_dists", "-inf"): "a token outside the top-k set: 0 log 0 = 0",
    ("analytic_token_kl", "ref_token_dists", "-inf"): "KL = +inf where π_ref lacks a token π_θ can draw",
    ("placement_vectors", "placement", "none"): "None: no KL term",
    ("exact_moments", "v", "none"): "None: no pathwise part (v = 0)",
    ("tiny_gpt2_policy_pair", "policy_noise", "zero"): "noise = 0: the policy is a copy of the reference",
    ("placement_vectors", "token_scores", "empty support"): "the last axis holds the P parameters: any P",
    ("placement_vectors", "token_scores", "wrong support"): "the last axis holds the P parameters: any P",
    ("shared_log_cdf_estimate_moments", "log_cdf_lt", "-inf"): "F_lt = 0: the count is always 0",
    ("CausalLMPolicy", "eos_token_id", "none"): "None: no EOS, every continuation has max_new_tokens tokens",
    ("CausalLMPolicy", "eos_token_id", "zero"): "token 0 may be the EOS",
    ("Enumeration", "sequences", "id outside the vocabulary"): "an Enumeration has no vocabulary: any id >= 0",
    ("string_keys", "sequences", "id outside the vocabulary"): "no vocabulary: any id >= 0",
    ("Enumeration", "log_probs", "-inf"): "log p = -inf: a string of zero mass",
    ("Enumeration.row", "batch_index", "zero"): "row 0 of the batch",
    ("Task", "eos_token_id", "none"): "None: no EOS (as CausalLMPolicy)",
    ("Task", "eos_token_id", "zero"): "token 0 may be the EOS",
    ("policy_metrics", "num_samples", "zero"): "0: no sample estimates (documented)",
    ("option", "help", "unknown option"): "help is free text",
    **{("option", "default", m): "the default is any value (its field's type is the dataclass's)"
       for m in ("none", "string", "number")},
    ("option", "minimum", "number"): "minimum = 1: a valid lower bound",
    ("plain_text", "doc", "unknown option"): "doc is free text",
    ("plain_text", "doc", "none"): "None: no docstring gives '' (documented: str | None)",
    **{(f, "prog", "unknown option"): "prog is free text" for f in ("build_parser", "parse_config")},
    **{(f, "description", "unknown option"): "description is free text" for f in ("build_parser", "parse_config")},
    ("package_version", "name", "unknown option"): "a distribution that is not installed: 'unknown' (documented)",
    **{("fingerprint", "header", m): "any JSON value hashes" for m in ("none", "string", "number")},
    **{("to_json", "value", m): "a JSON value is its own JSON form" for m in ("none", "string", "number")},
    ("VBoNReward", "name", "string"): "name is free text",
    ("exact_weight_moments", "scores", "empty support"): "the last axis holds the P parameters: any P",
    ("exact_weight_moments", "scores", "wrong support"): "the last axis holds the P parameters: any P",
    ("true_reward_curves", "proxy_rewards", "bool"): "as bon_true_reward: all False, every curve is E_ref[true reward]",
    ("true_reward_curves", "true_rewards", "bool"): "boolean true rewards are 0 and 1 (all False: every curve is 0)",
    ("VBoNReward", "num_ref_samples", "number"): "1: a valid count (unused without reference_model)",
    ("VBoNReward", "max_new_tokens", "number"): "1: a valid count (unused without reference_model)",
    ("VBoNReward.training_rewards", "rewards", "+inf"): "+inf is above every stored reference reward: F_lt = M/(M+1)",
    ("Task.policy", "prompt", "zero"): "prompt 0: the first prompt",
    ("sample_indices", "log_probs", "bfloat16"): "draws from the bfloat16-rounded law: valid indices, not float64's",
    ("sample_indices", "size", "zero"): "no samples: an empty (P, 0) result",
    ("tabular_pair", "policy_noise", "zero"): "noise = 0: the policy is a copy of the reference",
    ("gpt2_pair", "policy_noise", "zero"): "noise = 0: the policy is a copy of the reference",
    ("infalign_optimum_log_probs", "t", "negative"): "t is any finite real (documented)",
    ("infalign_optimum_log_probs", "t", "zero"): "t = 0 is the identity transform (documented)",
    ("infalign_beta_for_kl", "t", "negative"): "t is any finite real (documented)",
    ("infalign_beta_for_kl", "t", "zero"): "t = 0 is the identity transform (documented)",
    ("infalign_beta_for_kl", "kl", "zero"): "β = inf at kl = 0 (documented)",
    ("infalign_best_t", "kl", "zero"): "kl = 0: every t gives π_ref, β = inf",
    ("pessimism_sampler_log_probs", "reward_bound", "number"): "reward_bound = 1 = the top reward: a valid bound",
    ("grpo_passk_advantages", "eps", "zero"): "eps = 0 divides by the bare standard deviation (0 where std = 0)",
    ("bon_true_reward", "proxy_rewards", "bool"): "boolean proxy rewards (all False): every string ties, π_N = π_ref",
    ("bon_true_reward_dn", "proxy_rewards", "bool"): "as bon_true_reward: d/dN of a constant is 0",
    ("hedgetune_n", "proxy_rewards", "bool"): "as bon_true_reward: every N is optimal, the smallest is 1",
    ("bon_true_reward", "true_rewards", "bool"): "boolean true rewards are 0 and 1 (all False: E = 0)",
    ("bon_true_reward_dn", "true_rewards", "bool"): "as bon_true_reward",
    ("hedgetune_n", "true_rewards", "bool"): "as bon_true_reward: every N is optimal, the smallest is 1",
}
"""(function, parameter, mutation) -> why the mutated call is valid (it must return)."""

NO_BATCH_AXES = {
    "bonbon_tilt_c_for_kl": "one support (k,)",
    "support_index": "one support of strings (S, T) and one list of samples",
    "bon_sampler_test": "one support (k,) and one list of sample indices",
    "goodness_of_fit": "one law (k,) and one list of sample indices",
    "flat_gradient": "loss is one scalar",
    "exact_moments": "one support: probs (S,), s (S, P), ...",
    "estimate_coefficients": "index and f_values are (R, k)",
    "placement_vectors": "one support: token_scores (S, T, P), ...",
    "shared_log_cdf_estimate_moments": "one support (S,)",
    "per_output_gradients": "outputs is (n,)",
    **{oracle: "an exact oracle on one support" for oracle in (
        "exact_cdf", "brute_force_bon", "exact_bon", "paper_bon", "exact_win_rate", "mp_bon_log_probs")},
    "CausalLMPolicy": "a prompt is one non-empty sequence of token ids",
    "Enumeration.index": "strings is (k, T): one list of strings",
    "pair_scores": "keep is (K,) positions in one support",
    "sample_indices": "log_probs is (P, S)",
    "policy_metrics": "log_probs is the task's (P, S)",
    "VBoNReward.training_rewards": "rewards is (k,): one prompt's completions",
    "exact_weight_moments": "one support: probs (S,), rewards (S,), scores (S, P)",
    "evaluate_estimator": "one support: target (P,), probs (S,), score (S, P), ...",
    **{one: "one support (k,)" for one in (
        "infalign_best_t", "infalign_beta_for_kl", "true_reward_curves", "exact_metrics", "goodness_of_fit",
        "bon_sampler_test")},
    "CausalLMPolicy.token_log_probs": "the result's length T is that of the longest continuation",
    "CausalLMPolicy.log_prob": "as token_log_probs",
    "CausalLMPolicy.token_distributions": "as token_log_probs",
}
"""Functions whose arrays have fixed ranks: an empty batch (an extra axis) is an error."""

EMPTY_STRINGS_REFUSED = {
    "Enumeration": "sequences (S, T) with S = 0 strings no longer matches log_probs (S,)",
}
"""Functions whose token argument's first axis is a support, not a batch: zero strings are refused."""

EMPTY_BATCH_NONEMPTY_RESULT = {
    "exact_gradient": "the gradient of an empty batch's summed loss: zeros of the parameters' size",
}
"""Functions whose result for an empty batch is not itself empty."""


def _names(message: str, param: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(param)}(?![\w])", message) is not None


def _call(target: Target, kwargs: dict[str, Any]):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        return target.get()(**_unwrap(kwargs))


def _leaves(result) -> list[np.ndarray]:
    """The numeric arrays in a result (tuples, lists, dicts and dataclasses walked)."""
    if isinstance(result, torch.Tensor):
        return [result.detach().cpu().to(torch.float64).numpy()]
    if isinstance(result, np.ndarray) and result.dtype.kind in "biuf":
        return [result.astype(np.float64)]
    if isinstance(result, (bool, int, float, np.number, Fraction)):
        return [np.asarray(float(result))]
    if isinstance(result, (tuple, list)):
        return [leaf for item in result for leaf in _leaves(item)]
    if isinstance(result, dict):
        return [leaf for item in result.values() for leaf in _leaves(item)]
    if dataclasses.is_dataclass(result):
        return _leaves([getattr(result, f.name) for f in dataclasses.fields(result)])
    return []


def _equal(have, want) -> bool:
    have_leaves, want_leaves = _leaves(have), _leaves(want)
    if not have_leaves or len(have_leaves) != len(want_leaves):
        return have is want or (not have_leaves and not want_leaves and type(have) is type(want))
    return all(a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
               for a, b in zip(have_leaves, want_leaves))


def check(target: Target, param: str, mutation: Mutation, base: dict[str, Any]) -> str | None:
    """None when the mutated call behaves as documented, else what went wrong."""
    key = (target.name, param, mutation.name)
    try:
        result = _call(target, mutation.kwargs)
    except (ValueError, TypeError) as err:
        if key in VALID:
            return f"raised {type(err).__name__}: {err} (VALID says: {VALID[key]})"
        if mutation.name == "empty batch" and target.name not in NO_BATCH_AXES and target.name not in EMPTY_STRINGS_REFUSED:
            return f"refused an empty batch: {type(err).__name__}: {err}"
        if not any(_names(str(err), name) for name in (param, *mutation.involved)):
            return f"{type(err).__name__} does not name {param!r}: {err}"
        return None
    except Exception as err:  # noqa: BLE001  (any other exception is the failure reported)
        return f"raised {type(err).__name__}: {err}"
    if key in VALID:
        return None if not any(np.isnan(a).any() for a in _leaves(result)) else "a VALID call returned NaN"
    if mutation.name == "empty batch":
        if target.name in NO_BATCH_AXES:
            return "accepted an empty batch that NO_BATCH_AXES says is an error"
        leaves = _leaves(result)
        empty_list = isinstance(result, (list, tuple)) and len(result) == 0
        if target.name not in EMPTY_BATCH_NONEMPTY_RESULT and not empty_list and (not leaves or any(a.size for a in leaves)):
            return f"an empty batch gave a non-empty result {result!r}"
        return None
    if mutation.name == "bfloat16":
        want = _call(target, base)
        return None if _close(result, want, RTOL_BFLOAT16) else f"returned {result!r}, far from float64's {want!r}"
    if mutation.equivalent is not None:
        want = _call(target, mutation.equivalent)
        return None if _equal(result, want) else f"returned {result!r}, not the equivalent call's {want!r}"
    return f"accepted it and returned {_short(result)}"


def _close(have, want, rtol: float) -> bool:
    have_leaves, want_leaves = _leaves(have), _leaves(want)
    return len(have_leaves) == len(want_leaves) and all(
        a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=rtol) for a, b in zip(have_leaves, want_leaves)
    )


def _short(result) -> str:
    text = repr(result)
    return text if len(text) < 200 else text[:200] + "..."


# --------------------------------------------------------------------------- tests


def _module_has_all(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(
        isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        for node in tree.body
    )


def test_every_public_module_is_walked_or_excused():
    """A new module of bonmath with an ``__all__`` gets walked (or excused, with a reason)."""
    root = Path(bonmath.__file__).parent
    public = set()
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if _module_has_all(path):
            public.add(name)
    missing = public - set(WALKED) - set(NOT_WALKED)
    assert not missing, f"add {sorted(missing)} to WALKED (or, with a reason, NOT_WALKED) in tests/test_bad_input.py"


def test_the_allow_lists_name_real_targets():
    """Every allow-list entry names a walked function (and one of its parameters)."""
    by_name = {t.name: t for t in targets()}
    for name in [*NO_BATCH_AXES, *EMPTY_BATCH_NONEMPTY_RESULT, *EMPTY_STRINGS_REFUSED, *(name for name, _, _ in VALID)]:
        assert name in by_name, f"{name} is not a walked target"
    for name, param, _ in VALID:
        assert param in {p.name for p in _parameters(by_name[name])}, f"{name} has no parameter {param}"


@pytest.mark.parametrize("target", targets(), ids=lambda t: t.name)
def test_bad_input_is_refused_by_name(target):
    """Every mutation of every argument raises ValueError/TypeError naming it, or gives a documented result."""
    base = base_arguments(target)
    try:
        _call(target, base)
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"the valid call {target.name}({base}) raised {type(err).__name__}: {err}; fix the tables")
    failures = []
    for param, mutation in mutations(target, base):
        problem = check(target, param, mutation, base)
        if problem is not None:
            failures.append(f"{target.name}({param}: {mutation.name}) {problem}")
    assert not failures, "\n".join(failures)


def summary() -> dict[str, int]:
    """Calls made and calls that behave as documented (for reports)."""
    calls = ok = 0
    for target in targets():
        base = base_arguments(target)
        for param, mutation in mutations(target, base):
            calls += 1
            ok += check(target, param, mutation, base) is None
    return {"calls": calls, "as_documented": ok}
