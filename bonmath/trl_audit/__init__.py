"""Audit TRL's own policy gradients against exact gradients on an enumerable tiny GPT-2.

TRL's trainers (``GRPOTrainer``, ``RLOOTrainer``) are run as in training: the
trainer's dataloader yields a generation batch, :meth:`training_step` generates
the completions with ``model.generate``, scores them with the reward function,
computes the advantages and the loss, and calls ``backward``. The audit then
reads ``.grad`` and never takes an optimizer step (no optimizer is ever built),
so every repetition is an independent draw of TRL's gradient at the same
parameters. Nothing of TRL is re-implemented; the only trainer state the audit
sets is ``current_gradient_accumulation_steps``, which ``Trainer``'s own loop
sets before each accumulation window (to ``gradient_accumulation_steps`` = 1).

On the other side, the policy and the reference are enumerated exactly
(:class:`bonmath.hf.CausalLMPolicy`, with TRL's sampling settings: temperature,
no top-k / top-p, EOS, ``max_completion_length``), and the exact gradient of
each *target* objective is taken by autograd through the enumeration. The
Monte Carlo mean of R TRL gradients is compared with it (:func:`bias_statistics`);
the law TRL samples from is checked against the enumeration by a χ² test on
every completion TRL generated (:func:`sampling_law_test`).

Targets (all are losses, -J, so they compare with TRL's loss gradient):

- ``sequence_kl``: J = E_θ[r] - β KL(π_θ‖π_ref), the KL of whole completions;
- ``token_kl``: J = E_θ[r] - β Σ_t E_{y_<t ~ sg π_θ}[D(π_θ(·|y_<t), π_ref(·|y_<t))],
  per-token KL with the prefix distribution held fixed; D is the reverse KL
  for GRPO's bias-corrected k3 (ρ_t k3_t) and for RLOO, the forward KL
  KL(π_ref‖π_θ) for GRPO's plain k3 (docs/math.md, "Gradients");
- ``trl_expectation``: the exact expectation of TRL's gradient, derived from its
  code, where it has a closed form (GRPO ``grpo`` / ``dr_grpo`` losses without
  reward scaling; the planted-bias RLOO); a check of the audit itself;
- ``centred_sequence_kl``: ``trl_expectation`` with the sequence KL in place of the
  per-token one (``dr_grpo``): whether TRL's KL term is the sequence-level gradient.

vBoN cases (:class:`VBoNSpec`, :func:`vbon_cases`) train on the vBoN reward of
:class:`bonmath.trl.VBoNReward` instead of the base reward and are compared with the
vBoN objectives (:func:`vbon_problem`, :func:`vbon_targets`): -∇KL(π_θ‖π_N) with the
exact π_N, -∇KL(π_θ‖π̂_N) for the BoN law π̂_N of an estimated CDF, and the finite
vBoN bound L̃/(N-1).

The audit checks itself: a planted bias (RLOO's advantages centred on a group
mean that includes the sample's own reward, i.e. scaled by (G-1)/G) must be
detected, and the targets derived from TRL's code must match.

The model is tiny so the support is small (V = 5 tokens, 3 new tokens: 85
completions). This package imports torch and transformers; datasets and trl are
imported when a trainer is built (``import bonmath`` imports none of them).
Runs need no network: the models are built and saved locally.

The modules, each importing only from those above it:

* :mod:`~bonmath.trl_audit.statistics`: relative bias, z and cosine of R gradient draws
  against a target; the χ² test of the sampling law;
* :mod:`~bonmath.trl_audit.models`: the tiny GPT-2 pair saved to disk, the count reward, the
  enumeration under TRL's sampling settings;
* :mod:`~bonmath.trl_audit.targets`: the exact target losses and gradients, :class:`ExactProblem`;
* :mod:`~bonmath.trl_audit.cases`: the configuration grid (:class:`AuditCase`) and the targets
  derived from TRL's code;
* :mod:`~bonmath.trl_audit.vbon`: the vBoN reward's exact problem and targets;
* :mod:`~bonmath.trl_audit.run`: TRL's trainers, the planted bias, :func:`audit_case`;
* :mod:`~bonmath.trl_audit.report`: verdicts, the markdown table, merging partial runs.
"""

from __future__ import annotations

from bonmath.trl_audit.cases import (
    TRAINERS,
    AuditCase,
    VBoNSpec,
    default_cases,
    smoke_cases,
    targets_for,
    vbon_cases,
)
from bonmath.trl_audit.models import (
    EOS,
    TinySetup,
    build_tiny_setup,
    count_token_reward,
    support_rewards,
)
from bonmath.trl_audit.report import MERGE_KEYS, markdown_report, merge_results, verdict
from bonmath.trl_audit.run import GradientSample, audit_case, make_trainer, sample_trl_gradients
from bonmath.trl_audit.statistics import bias_statistics, sampling_law_test
from bonmath.trl_audit.targets import (
    KL_KINDS,
    LENGTH_WEIGHTS,
    SCALE_RULES,
    ExactProblem,
    Target,
    exact_problem,
    kl_rl_target_loss,
)
from bonmath.trl_audit.vbon import VBoNProblem, vbon_problem, vbon_targets

__all__ = [
    "EOS",
    "KL_KINDS",
    "LENGTH_WEIGHTS",
    "MERGE_KEYS",
    "SCALE_RULES",
    "TRAINERS",
    "AuditCase",
    "ExactProblem",
    "GradientSample",
    "Target",
    "TinySetup",
    "VBoNProblem",
    "VBoNSpec",
    "audit_case",
    "bias_statistics",
    "build_tiny_setup",
    "count_token_reward",
    "default_cases",
    "exact_problem",
    "kl_rl_target_loss",
    "make_trainer",
    "markdown_report",
    "merge_results",
    "sample_trl_gradients",
    "sampling_law_test",
    "smoke_cases",
    "support_rewards",
    "targets_for",
    "vbon_cases",
    "vbon_problem",
    "vbon_targets",
    "verdict",
]
