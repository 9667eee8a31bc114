"""The optimum of the vBoN code's released "exact" training mode, and its distance to π_N.

The paper's released code has an "exact" mode that trains KL-regularised RL with the
reward (1/n) R_n, R_n = log π_n/π_ref (:func:`bonmath.bon_log_ratio`), and the KL
coefficient β = 1/(n-1) it uses for the bound (docs/math.md, "vBoN"). The KL-RL
optimum with reward r and coefficient β is π_ref e^(r/β)/Z
(:func:`bonmath.tilted_log_probs`), so this mode converges to

    π ∝ π_ref exp(R_n (n-1)/n) = π_ref^(1/n) π_n^((n-1)/n),

a geometric interpolation between π_ref and π_n, not π_n. With β = 1/n the same
reward gives π_ref e^(R_n) = π_n exactly: KL(optimum || π_n) = 0 only at β = 1/n
(unless π_n = π_ref).
"""

from __future__ import annotations

from bonmath.backend import Array, masked_ieee
from bonmath.bon import bon_log_ratio
from bonmath.optimal import tilted_log_probs
from bonmath.validation import check_n, check_positive, prepare


@masked_ieee
def released_exact_mode_optimum(
    ref_log_probs: Array,
    rewards: Array,
    n: float,
    *,
    beta: float | None = None,
    normalize: bool = False,
) -> Array:
    """The maximiser of E_π[R_n/n] - β KL(π || π_ref): the released "exact" mode's fixed point.

    Parameters
    ----------
    ref_log_probs : array of shape (..., k)
        log π_ref over an enumerated support; leading axes are a batch.
    rewards : array of shape (..., k)
        Rewards; ties allowed.
    n : float
        BoN samples, real n > 1.
    beta : float, optional
        KL coefficient; default 1/(n-1), the released code's. β = 1/n recovers π_n.
    normalize : bool, default False
        Renormalise ``ref_log_probs`` instead of rejecting unnormalised input.

    Returns
    -------
    array of shape (..., k)
        log of π_ref e^(R_n/(nβ))/Z; with the default β, π_ref^(1/n) π_n^((n-1)/n)/Z.

    Notes
    -----
    :func:`bonmath.tilted_log_probs` with reward R_n/n (docs/math.md, "vBoN": "the
    released code's 'exact' mode ... optimum is π_ref^(1/N) π_N^((N-1)/N)/Z, not π_N").

    Examples
    --------
    Two equally likely strings, n = 2: the optimum is (0.366, 0.634), not π_2 = (0.25, 0.75).

    >>> import numpy as np
    >>> np.exp(released_exact_mode_optimum(np.log([0.5, 0.5]), [0, 1], 2)).round(3).tolist()
    [0.366, 0.634]
    >>> np.exp(released_exact_mode_optimum(np.log([0.5, 0.5]), [0, 1], 2, beta=0.5)).round(12).tolist()
    [0.25, 0.75]
    """
    n = check_n(n)
    if n <= 1:
        raise ValueError(f"n must be > 1 (β = 1/(n-1)); got {n:g}")
    beta = 1.0 / (n - 1.0) if beta is None else check_positive(beta, "beta")
    _, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": ref_log_probs}, {"rewards": rewards}, normalize=normalize
    )
    reward = bon_log_ratio(ref_log_probs, rewards, n) / n
    return tilted_log_probs(ref_log_probs, reward, beta)
