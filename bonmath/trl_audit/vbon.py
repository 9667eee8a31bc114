"""The audit's vBoN rows: TRL trained on a vBoN reward, against the exact vBoN objectives.

:func:`~bonmath.trl_audit.vbon_problem` builds the :class:`bonmath.trl.VBoNReward` of a base reward (exact
CDF or one estimated from M reference samples) and its exact problem
(:class:`VBoNProblem`: -KL(π_θ‖π_N), -KL(π_θ‖π̂_N), the finite bound L̃/(N-1));
:func:`~bonmath.trl_audit.vbon_targets` says which of them a vBoN configuration should estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bonmath.divergences import kl_divergence
from bonmath.enumeration import EnumeratedPair
from bonmath.estimators import objective_loss
from bonmath.objectives import vbon_finite_lower_bound
from bonmath.trl_audit.cases import TRAINERS, AuditCase, VBoNSpec, _grpo_token_kl
from bonmath.trl_audit.models import TinySetup, _enumerate_pair, support_rewards
from bonmath.trl_audit.targets import ExactProblem, Target, _kl_rl, exact_problem
from bonmath.validation import check_choice, check_count

__all__ = ["VBoNProblem", "vbon_problem", "vbon_targets"]


@dataclass
class VBoNProblem:
    """The exact side of one vBoN reward: the TRL reward function and its exact problem.

    Attributes
    ----------
    spec : VBoNSpec
    reward_func : bonmath.trl.VBoNReward
        What TRL trains on.
    problem : ExactProblem
        Its ``rewards`` are the vBoN rewards on the support, rounded to float32 like TRL's.
    base_rewards : tensor of shape (S,)
        The base reward on the support, float64 as the base reward function returns it.
    training_rewards : tensor of shape (S,)
        The vBoN reward on the support in float64 (R_N, R̂_N or log F̃).
    summary : dict
        N, M, the reference samples' rewards, KL(π_θ‖π_N), KL(π_θ‖π̂_N), L̃ and the like.

    Examples
    --------
    With the exact CDF the training reward is R_N = log π_N - log π_ref, so the KL-RL
    objective at β = 1, E_θ[R_N] - KL(π_θ‖π_ref), is -KL(π_θ‖π_N) (``bon_loss``):

    >>> import tempfile, torch
    >>> from bonmath.divergences import kl_divergence
    >>> from bonmath.trl_audit import VBoNSpec, build_tiny_setup, count_token_reward
    >>> folder = tempfile.TemporaryDirectory()
    >>> setup = build_tiny_setup(folder.name, vocab_size=3, max_completion_length=2, seed=1)
    >>> vbon = vbon_problem(setup, VBoNSpec("exact", 2), count_token_reward(1))
    >>> pair = vbon.problem.pair
    >>> log_probs = pair.policy_log_probs.detach()
    >>> objective = log_probs.exp() @ vbon.training_rewards - kl_divergence(log_probs, pair.ref_log_probs)
    >>> bool(torch.isclose(objective, -vbon.bon_loss(pair, vbon.problem.rewards))), round(vbon.summary["kl_policy_bon"], 4)
    (True, 0.2002)
    >>> folder.cleanup()
    """

    spec: VBoNSpec
    reward_func: Any
    problem: ExactProblem
    base_rewards: torch.Tensor
    training_rewards: torch.Tensor
    summary: dict

    def bon_loss(self, pair: EnumeratedPair, rewards: torch.Tensor) -> torch.Tensor:
        """KL(π_θ‖π_N) with the exact π_N of the base reward (``rewards`` is not used)."""
        return objective_loss("vbon", pair.policy_log_probs, pair.ref_log_probs,
                              rewards=self.base_rewards, n=self.spec.n)

    def estimated_bon_loss(self, pair: EnumeratedPair, rewards: torch.Tensor) -> torch.Tensor:
        """KL(π_θ‖π̂_N), π̂_N ∝ π_ref e^{R̂_N} the law the training reward describes (``rewards`` unused)."""
        log_bon = torch.log_softmax(pair.ref_log_probs + self.training_rewards, -1)
        return kl_divergence(pair.policy_log_probs, log_bon)

    def bound_loss(self, pair: EnumeratedPair, rewards: torch.Tensor) -> torch.Tensor:
        """-L̃/(N-1), L̃ = log N + (N-1) E_θ[log F̃] - KL(π_θ‖π_ref) (``rewards`` unused)."""
        bound = vbon_finite_lower_bound(pair.policy_log_probs, pair.ref_log_probs, self.base_rewards, self.spec.n)
        return -bound / (self.spec.n - 1)


def vbon_problem(setup: TinySetup, spec: VBoNSpec, base_reward: Callable[..., Sequence[float]], *,
                 temperature: float = 1.0, random_directions: int = 3, seed: int = 0) -> VBoNProblem:
    """The vBoN reward of ``base_reward`` for ``spec``, and its exact problem.

    With ``spec.num_ref_samples = M`` the M reference completions are drawn once from
    the enumerated reference law (``numpy.random.default_rng(seed + 3)``) and scored with
    ``base_reward``; otherwise the reward gets the exact CDF of the support (``exact_cdf``).

    Notes
    -----
    The biases of an estimated CDF are exact here: π̂_N ∝ π_ref e^{R̂_N} is known on the
    support, so KL(π_θ‖π̂_N) - KL(π_θ‖π_N) and the gradient gap are evaluated exactly
    (:class:`bonmath.trl.VBoNReward`, Notes).

    Examples
    --------
    The CDF estimated from M = 8 reference completions (seeded): the reference rewards
    drawn, and the KL to the BoN law π̂_N the training reward describes against the KL
    to the exact π_N:

    >>> import tempfile
    >>> from bonmath.trl_audit import VBoNSpec, build_tiny_setup, count_token_reward
    >>> folder = tempfile.TemporaryDirectory()
    >>> setup = build_tiny_setup(folder.name, vocab_size=3, max_completion_length=2, seed=1)
    >>> vbon = vbon_problem(setup, VBoNSpec("exact", 2, num_ref_samples=8), count_token_reward(1))
    >>> vbon.summary["reference_rewards"]
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    >>> round(vbon.summary["kl_policy_estimated_bon"], 4), round(vbon.summary["kl_policy_bon"], 4)
    (0.1556, 0.2002)
    >>> folder.cleanup()
    """
    from bonmath.trl import VBoNReward

    check_choice(spec.objective, "spec.objective", ("exact", "bound"))
    pair = _enumerate_pair(setup, setup.policy, temperature)
    base = support_rewards(base_reward, setup, pair.keys(), float32=False)
    ref_log_probs = pair.ref_log_probs.detach()
    summary: dict = {"name": spec.name, "n": spec.n, "objective": spec.objective,
                     "num_ref_samples": spec.num_ref_samples}
    if spec.num_ref_samples is None:
        reward_func = VBoNReward(base_reward, spec.n, objective=spec.objective,
                                 exact_cdf={setup.prompt: (base.numpy(), ref_log_probs.numpy())})
    else:
        m = check_count(spec.num_ref_samples, "spec.num_ref_samples")
        probs = ref_log_probs.exp().numpy()
        drawn = np.random.default_rng(seed + 3).choice(len(probs), size=m, p=probs / probs.sum())
        reference = sorted(float(base[i]) for i in drawn)
        summary["reference_rewards"] = reference
        reward_func = VBoNReward(base_reward, spec.n, objective=spec.objective,
                                 reference_rewards={setup.prompt: reference})
    problem = exact_problem(setup, reward_func, temperature=temperature,
                            random_directions=random_directions, seed=seed)
    if problem.pair.keys() != pair.keys():
        raise RuntimeError("the policy's support changed between two enumerations")
    training = torch.as_tensor(reward_func.training_rewards(setup.prompt, base.numpy()), dtype=torch.float64)
    vbon = VBoNProblem(spec, reward_func, problem, base, training, summary)
    with torch.no_grad():
        pair = problem.pair
        summary["kl_policy_bon"] = float(vbon.bon_loss(pair, problem.rewards))
        if spec.num_ref_samples is not None:
            summary["kl_policy_estimated_bon"] = float(vbon.estimated_bon_loss(pair, problem.rewards))
        if spec.objective == "bound":
            summary["finite_bound"] = float(-(spec.n - 1) * vbon.bound_loss(pair, problem.rewards))
        summary["training_reward_values"] = sorted({float(r) for r in problem.rewards})
    return vbon


def vbon_targets(case: AuditCase, vbon: VBoNProblem, num_generations: int) -> list[Target]:
    """The targets of a vBoN case; the first is the objective the configuration claims.

    - RLOO, β = 1, exact CDF: ``vbon`` -∇KL(π_θ‖π_N) (predicted unbiased, c = 1).
    - RLOO, β = 1, F̂: ``vbon_estimated`` -∇KL(π_θ‖π̂_N) (predicted unbiased) and
      ``vbon`` -∇KL(π_θ‖π_N) (biased by the CDF estimate, exactly known).
    - RLOO, β = 1/(N-1), bound: ``vbon_bound`` ∇L̃/(N-1) (predicted unbiased) and
      ``vbon_scaled`` -∇KL(π_θ‖π_N)/(N-1), the objective the bound stands for.
    - GRPO ``dr_grpo``, β = 1, ``scale_rewards="none"``: ``vbon`` (c = 1/L), ``token_kl``
      (E[R_N] - Σ_t KL(π_t‖ref_t), prefix fixed) and ``trl_expectation`` (the (G-1)/G
      reward factor and the per-token KL gradient, predicted unbiased; see :func:`~bonmath.trl_audit.targets_for`).

    Examples
    --------
    RLOO at β = 1 with the exact vBoN reward claims -∇KL(π_θ‖π_N); GRPO ``dr_grpo`` gets
    three targets, of which only the derived expectation is predicted to match; a GRPO
    configuration the targets do not describe is refused:

    >>> import tempfile
    >>> from bonmath.trl_audit import AuditCase, VBoNSpec, build_tiny_setup, count_token_reward
    >>> folder = tempfile.TemporaryDirectory()
    >>> setup = build_tiny_setup(folder.name, vocab_size=3, max_completion_length=2, seed=1)
    >>> vbon = vbon_problem(setup, VBoNSpec("exact", 2), count_token_reward(1))
    >>> rloo = AuditCase("rloo", dict(beta=1.0, normalize_advantages=False), vbon=vbon.spec)
    >>> [(t.name, t.objective, t.expected_match) for t in vbon_targets(rloo, vbon, num_generations=2)]
    [('vbon', '-KL(π‖π_N)', True)]
    >>> grpo = AuditCase("grpo", dict(loss_type="dr_grpo", beta=1.0, scale_rewards="none"), vbon=vbon.spec)
    >>> [(t.name, t.expected_match) for t in vbon_targets(grpo, vbon, num_generations=2)]
    [('vbon', False), ('token_kl', False), ('trl_expectation', True)]
    >>> vbon_targets(AuditCase("grpo", dict(loss_type="grpo", beta=1.0), vbon=vbon.spec), vbon, num_generations=2)
    Traceback (most recent call last):
    ...
    ValueError: vBoN targets for GRPO assume loss_type='dr_grpo' and scale_rewards='none'
    >>> folder.cleanup()
    """
    spec = vbon.spec
    n = spec.n
    if case.trainer == "rloo":
        if case.config.get("normalize_advantages", False):
            raise ValueError("vBoN targets assume RLOO with normalize_advantages=False")
        if spec.objective == "bound":
            if spec.num_ref_samples is not None:
                raise ValueError("vBoN bound targets are implemented for the exact CDF only")
            scaled = vbon.bon_loss
            return [Target("vbon_bound", f"L̃/({n}-1), L̃ = log N + (N-1) E[log F̃] - KL(π‖π_ref)",
                           vbon.bound_loss, expected_match=True),
                    Target("vbon_scaled", f"-KL(π‖π_N)/({n}-1)",
                           lambda pair, rewards: scaled(pair, rewards) / (n - 1))]
        if spec.num_ref_samples is None:
            return [Target("vbon", "-KL(π‖π_N)", vbon.bon_loss, expected_match=True)]
        return [Target("vbon_estimated", f"-KL(π‖π̂_N), F̂ from M={spec.num_ref_samples}",
                       vbon.estimated_bon_loss, expected_match=True),
                Target("vbon", "-KL(π‖π_N)", vbon.bon_loss)]
    check_choice(case.trainer, "trainer", TRAINERS)
    if case.config.get("loss_type") != "dr_grpo" or case.config.get("scale_rewards") != "none":
        raise ValueError("vBoN targets for GRPO assume loss_type='dr_grpo' and scale_rewards='none'")
    beta = float(case.config.get("beta", 0.0))
    keep = (check_count(num_generations, "num_generations", minimum=2) - 1) / num_generations
    token, words = _grpo_token_kl(case)
    return [
        Target("vbon", "-KL(π‖π_N)", vbon.bon_loss, "inverse_max_length"),
        _kl_rl("token_kl", f"E[R_N] - {beta:g} sum_t {words}, prefix fixed", "inverse_max_length",
               kl_weight=beta, kl=token),
        _kl_rl("trl_expectation", f"{keep:g} E[(R_N - E R_N)] - {beta:g} E[sum_t {words} score terms]",
               "inverse_max_length", expected_match=True, reward_weight=keep, kl_weight=beta, kl=token),
    ]
