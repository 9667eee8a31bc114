"""The audit's statistics: TRL's Monte Carlo gradient against an exact target, and its sampling law.

:func:`bias_statistics` compares R independent draws of a gradient with a target
(relative bias, its noise floor, cosine, and a Bonferroni family-wise z over fixed
directions); :func:`sampling_law_test` is the χ² goodness of fit of generated
completions against an enumerated law. Both take tensors and counts only: nothing
here knows about TRL or the models.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from scipy import special, stats

from bonmath.enumeration import string_positions

__all__ = ["Z_MATCH", "bias_statistics", "sampling_law_test"]

Z_MATCH = 5.0
"""A row "matches" its target when bias_z <= Z_MATCH (two-sided family-wise p >= 5.7e-7)."""


def _z_from_log_p(log_p: float) -> float:
    """The normal z with two-sided tail probability e^{log_p} (log space, no underflow)."""
    if log_p >= 0.0:
        return 0.0
    half = log_p - math.log(2.0)
    if half > -700.0:
        return float(-special.ndtri(math.exp(half)))
    from scipy.optimize import brentq

    return float(brentq(lambda z: special.log_ndtr(-z) - half, 0.0, 1e4))


def bias_statistics(gradients: torch.Tensor, target: torch.Tensor, directions: torch.Tensor) -> dict:
    """How far the Monte Carlo mean of TRL's gradient is from a target, and its noise.

    Parameters
    ----------
    gradients : tensor of shape (R, P)
        R independent draws ĝ_r.
    target : tensor of shape (P,)
        c ∇(-J).
    directions : tensor of shape (K, P)
        Fixed unit directions u_k, chosen before sampling.

    Returns
    -------
    dict
        ``relative_bias`` ‖m - g‖/‖g‖ with m the mean of the ĝ_r; ``relative_bias_se``
        = sqrt(tr Ĉov(ĝ)/R)/‖g‖, the size of ‖m - E ĝ‖/‖g‖ expected from noise alone
        (relative_bias is not significant below a few of these); ``cosine`` cos(m, g);
        ``bias_z`` and ``direction_t`` (below); ``p_value``.

    Raises
    ------
    ValueError
        If R < 2, if the target or the mean of the draws is 0, or if the draws are not
        finite or do not vary along some direction (the t statistic is then undefined).

    Notes
    -----
    The statistic: for each direction t_k = (ū_k - ⟨u_k, g⟩)/(s_k/√R), with ū_k, s_k the
    mean and standard deviation of ⟨u_k, ĝ_r⟩; under H0: E ĝ = g each t_k is Student-t
    with R - 1 degrees of freedom (the ĝ_r are means of many groups, close to normal).
    The family-wise two-sided p-value of max_k |t_k| is bounded by Bonferroni,
    p = min(1, 2K P(t_{R-1} > max_k |t_k|)), and reported as the normal z with the same
    two-sided tail: bias_z = Φ^{-1}(1 - p/2). Under H0, P(bias_z > 5) <= 5.7e-7.

    Examples
    --------
    Eight draws around the target, then the same draws around half of it:

    >>> import torch
    >>> target, directions = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    >>> noise = 0.01 * torch.tensor([[1.0, 2.0], [-1.0, -2.0], [2.0, -1.0], [-2.0, 1.0]], dtype=torch.float64).repeat(2, 1)
    >>> unbiased = bias_statistics(target + noise, target, directions)
    >>> round(unbiased["relative_bias"], 12), unbiased["bias_z"], unbiased["p_value"]
    (0.0, 0.0, 1.0)
    >>> halved = bias_statistics(0.5 * target + noise, target, directions)
    >>> round(halved["relative_bias"], 12), round(halved["bias_z"], 2), halved["bias_z"] > Z_MATCH
    (0.5, 6.72, True)
    """
    R, K = gradients.shape[0], directions.shape[0]
    if R < 2:
        raise ValueError(f"gradients must hold at least 2 draws, got {R}")
    mean = gradients.mean(0)
    norm = float(target.norm())
    if norm == 0.0:
        raise ValueError("the target gradient is 0: relative bias is undefined")
    if float(mean.norm()) == 0.0:
        raise ValueError("the mean of the gradient draws is 0: the cosine is undefined")
    total_variance = float(((gradients - mean) ** 2).sum(1).sum()) / (R - 1)
    projections = gradients @ directions.T
    se = projections.std(0, unbiased=True) / math.sqrt(R)
    if not bool((se > 0).all()):
        k = int(torch.nonzero(~(se > 0))[0])
        raise ValueError(f"gradients must be finite and vary along every direction: along direction {k} the "
                         f"{R} draws have standard error {float(se[k])} (e.g. every group generated the same "
                         "completions), so the t statistic is undefined")
    t = ((projections.mean(0) - directions @ target) / se).numpy()
    t_max = float(np.max(np.abs(t)))
    log_tail = float(stats.t.logsf(t_max, R - 1))
    if not math.isfinite(log_tail):
        log_tail = float(special.log_ndtr(-t_max))
    log_p = min(0.0, math.log(2 * K) + log_tail)
    return {
        "relative_bias": float((mean - target).norm()) / norm,
        "relative_bias_se": math.sqrt(total_variance / R) / norm,
        "cosine": float(mean @ target) / (float(mean.norm()) * norm),
        "bias_z": _z_from_log_p(log_p),
        "p_value": math.exp(log_p),
        "direction_t": [float(x) for x in t],
    }


def sampling_law_test(counts: Counter, sequences: Sequence[tuple[int, ...]], log_probs: torch.Tensor,
                      min_expected: float = 5.0) -> dict:
    """χ² goodness of fit of generated completions against the enumerated law.

    Cells with expected count below ``min_expected`` are pooled into one cell (if
    that pool is itself below ``min_expected`` it joins the smallest other cell).

    Returns
    -------
    dict with ``samples``, ``cells``, ``chi2``, ``dof``, ``p_value``.

    Raises
    ------
    ValueError
        If a generated completion is not in the enumerated support: the laws differ.

    Examples
    --------
    100 completions of a fair two-string law, 48 and 52 times: χ² = (2² + 2²)/50.

    >>> import torch
    >>> from collections import Counter
    >>> law = sampling_law_test(Counter({(1, 0): 48, (2, 0): 52}), [(1, 0), (2, 0)], torch.tensor([0.5, 0.5]).log())
    >>> law["chi2"], law["dof"], round(law["p_value"], 4)
    (0.16, 1, 0.6892)
    """
    index = string_positions(sequences)
    outside = [c for c in counts if c not in index]
    if outside:
        raise ValueError(f"generated completions outside the enumerated support: {outside[:5]}")
    observed = np.zeros(len(sequences))
    for c, n in counts.items():
        observed[index[c]] += n
    n = observed.sum()
    expected = n * np.exp(log_probs.detach().cpu().numpy())
    order = np.argsort(expected)
    small = expected[order] < min_expected
    obs_cells = list(observed[order][~small])
    exp_cells = list(expected[order][~small])
    if small.any():
        pool_obs, pool_exp = observed[order][small].sum(), expected[order][small].sum()
        if pool_exp < min_expected and exp_cells:
            obs_cells[0] += pool_obs
            exp_cells[0] += pool_exp
        else:
            obs_cells.append(pool_obs)
            exp_cells.append(pool_exp)
    obs, exp = np.array(obs_cells), np.array(exp_cells)
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    dof = len(obs) - 1
    return {"samples": int(n), "cells": len(obs), "chi2": chi2, "dof": dof,
            "p_value": float(stats.chi2.sf(chi2, dof)) if dof > 0 else 1.0}
