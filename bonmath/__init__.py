"""bonmath: exact Best-of-N alignment mathematics on enumerable language models.

Every function takes arrays over an enumerated support on the last axis (leading
axes are a batch) and accepts numpy arrays (computed in float64) or torch tensors
(device and dtype kept, differentiable). The mathematics, with its sources, is in
the documentation site's "The mathematics" page (docs/math.md).

``bonmath.hf`` (Hugging Face causal LMs), ``bonmath.estimators`` and
``bonmath.testing`` are imported on first use, so ``import bonmath`` needs neither
torch nor hypothesis.
"""

import importlib as _importlib

from bonmath.bon import bon_log_probs, bon_log_ratio, bon_log_ratio_from_cdf, sample_bon
from bonmath.cdf_estimation import (
    estimate_log_cdf,
    log_cdf_estimate_bias,
    log_cdf_estimate_moments,
)
from bonmath.divergences import bon_kl_upper_bound, entropy, kl_divergence, win_rate
from bonmath.enumeration import PAD, EnumeratedPair, Enumeration, enumerate_pair
from bonmath.inference_aware import (
    bon_true_reward,
    bon_true_reward_dn,
    hedgetune_n,
    max_at_k,
    pass_at_k,
)
from bonmath.levels import reward_cdf
from bonmath.objectives import (
    kl_rl_objective,
    vbon_finite_bound_log_cdf,
    vbon_finite_lower_bound,
    vbon_lower_bound,
    vbon_objective,
)
from bonmath.optimal import tilted_log_probs, vbon_bound_optimum
from bonmath.tabular import TabularLM
from bonmath.theory import *  # noqa: F403  (the related-work laws and bounds)
from bonmath.theory import __all__ as _theory_all

__version__ = "0.1.0"

__all__ = [
    "PAD",
    "EnumeratedPair",
    "Enumeration",
    "TabularLM",
    "bon_kl_upper_bound",
    "bon_log_probs",
    "bon_log_ratio",
    "bon_log_ratio_from_cdf",
    "bon_true_reward",
    "bon_true_reward_dn",
    "entropy",
    "enumerate_pair",
    "estimate_log_cdf",
    "hedgetune_n",
    "kl_divergence",
    "kl_rl_objective",
    "log_cdf_estimate_bias",
    "log_cdf_estimate_moments",
    "max_at_k",
    "pass_at_k",
    "reward_cdf",
    "sample_bon",
    "tilted_log_probs",
    "vbon_bound_optimum",
    "vbon_finite_bound_log_cdf",
    "vbon_finite_lower_bound",
    "vbon_lower_bound",
    "vbon_objective",
    "win_rate",
    *_theory_all,
]

_LAZY_SUBMODULES = {
    "hf", "estimators", "estimator_evaluation", "estimator_moments", "testing", "sentiment", "cache", "task",
    "train", "evaluation", "experiment", "zoo", "estimator_benchmark", "inference_aware_variance", "cli",
    "trl", "trl_sentiment", "trl_audit",
}


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return _importlib.import_module(f"bonmath.{name}")
    raise AttributeError(f"module 'bonmath' has no attribute {name!r}")
