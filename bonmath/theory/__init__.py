"""The wider Best-of-N theory, exactly: related laws, bounds and estimators.

Each module is one paper's (or one concept's) results, written against the core
(:mod:`bonmath.levels`, :mod:`bonmath.bon`, :mod:`bonmath.optimal`,
:mod:`bonmath.divergences`) rather than re-derived, with the same conventions:
support on the last axis, leading axes a batch, numpy (float64) or torch
(dtype and device kept, differentiable), log space.

* :mod:`~bonmath.theory.beirami`: the KL estimate and win-rate bound of Beirami et al. (2024);
* :mod:`~bonmath.theory.bond`: BOND's correction-factor law and its divergences (Sessa et al. 2024);
* :mod:`~bonmath.theory.bonbon`: BoNBoN's win-rate-optimal tilt, its continuous curves and β*
  (Gui, Gârbacea, Veitch 2024);
* :mod:`~bonmath.theory.soft_bon`: soft Best-of-n (Verdun et al. 2025), exactly;
* :mod:`~bonmath.theory.poisson`: Best-of-Poisson, n - 1 ~ Poisson(μ) (Khalaf et al. 2025);
* :mod:`~bonmath.theory.regularized`: BoN ranked by r + β log π_ref;
* :mod:`~bonmath.theory.divergence_bounds`: χ² and Rényi divergences and their BoN bounds;
* :mod:`~bonmath.theory.released_mode`: the optimum of the vBoN code's "exact" training mode;
* :mod:`~bonmath.theory.jbond`: J-BOND's anchor reward and its exact expectation (Sessa et al. 2024);
* :mod:`~bonmath.theory.infalign`: InfAlign's calibrated reward, transformed-reward optimum and
  inference-time win rates (Balashankar et al. 2024);
* :mod:`~bonmath.theory.pessimism`: InferenceTimePessimism's exact finite-n law and its χ² limit,
  and E[r_true] curves against BoN and Best-of-Poisson (Huang et al. 2025).

Which claims hold exactly on tied finite supports, and which only in the continuous
limit, is tabulated in ``docs_theory_table.md`` and tested in ``tests/test_theory.py``
(``tests/test_theory_inference_aware.py`` for the last three modules).
"""

from __future__ import annotations

from bonmath.theory.beirami import (
    beirami_kl_estimate,
    bon_win_rate_upper_bound,
    expected_beirami_kl_estimate,
)
from bonmath.theory.bonbon import (
    bon_expected_margin,
    bonbon_beta,
    bonbon_c_for_kl,
    bonbon_kl,
    bonbon_margin,
    bonbon_tilt_c_for_kl,
    bonbon_tilt_log_probs,
    bonbon_win_rate,
)
from bonmath.theory.bond import BondDivergences, bond_divergences, bond_log_probs
from bonmath.theory.divergence_bounds import (
    bon_chi2_upper_bound,
    bon_renyi_upper_bound,
    chi2_divergence,
    renyi_divergence,
)
from bonmath.theory.infalign import (
    InfAlignBestT,
    calibrated_reward,
    infalign_best_t,
    infalign_beta_for_kl,
    infalign_optimum_log_probs,
    inference_time_win_rate,
)
from bonmath.theory.jbond import jbond_anchor_reward, jbond_expected_reward
from bonmath.theory.pessimism import (
    TrueRewardCurves,
    pessimism_log_probs,
    pessimism_sampler_log_probs,
    true_reward_curves,
)
from bonmath.theory.poisson import best_of_poisson_log_probs
from bonmath.theory.regularized import regularized_bon_log_probs
from bonmath.theory.released_mode import released_exact_mode_optimum
from bonmath.theory.soft_bon import soft_bon_log_probs

__all__ = [
    "BondDivergences",
    "InfAlignBestT",
    "TrueRewardCurves",
    "beirami_kl_estimate",
    "best_of_poisson_log_probs",
    "bon_chi2_upper_bound",
    "bon_expected_margin",
    "bon_renyi_upper_bound",
    "bon_win_rate_upper_bound",
    "bonbon_beta",
    "bonbon_c_for_kl",
    "bonbon_kl",
    "bonbon_margin",
    "bonbon_tilt_c_for_kl",
    "bonbon_tilt_log_probs",
    "bonbon_win_rate",
    "bond_divergences",
    "bond_log_probs",
    "calibrated_reward",
    "chi2_divergence",
    "expected_beirami_kl_estimate",
    "infalign_best_t",
    "infalign_beta_for_kl",
    "infalign_optimum_log_probs",
    "inference_time_win_rate",
    "jbond_anchor_reward",
    "jbond_expected_reward",
    "pessimism_log_probs",
    "pessimism_sampler_log_probs",
    "regularized_bon_log_probs",
    "released_exact_mode_optimum",
    "renyi_divergence",
    "soft_bon_log_probs",
    "true_reward_curves",
]
