"""Shared tolerances and hypothesis profiles.

Tolerances are named here, not chosen per test (STYLE.md, "Numerics").
"""

import os

from hypothesis import HealthCheck, settings

RTOL_EXACT = 1e-12
"""float64 results against exact rationals."""
ATOL_LOG = 1e-10
"""Absolute error on log values (log-probabilities, KL in nats)."""
ATOL_LOG_FLOAT32 = 1e-4
"""Absolute error of float32 log-probabilities computed two ways (e.g. with and without padding:
another reduction order); about 100 float32 ulps at |log p| ~ 10."""
RTOL_MPMATH = 1e-10
"""Relative error of log-space results against mpmath at high precision (the issue's target)."""
Z_BOUND = 5.0
"""Monte Carlo checks: |mean - exact| <= Z_BOUND standard errors (two-sided failure rate 5.7e-7)."""
RTOL_FINITE_DIFFERENCE = 1e-6
"""Autograd against central finite differences in float64 (step ~1e-5..1e-6), relative error."""
ATOL_NORMALISATION = 1e-12
"""|log Σ p| of an enumerated float64 distribution."""
NEAR_ZERO = 1e-5
"""Below this |want|, a log value (R_N, a divergence) is checked by ATOL_NEAR_ZERO instead of RTOL_MPMATH."""
ATOL_NEAR_ZERO = 1e-15
"""Absolute error of a value within NEAR_ZERO of 0 against mpmath (relative error means nothing at an exact 0)."""
BIAS_FLOOR = 1e-3
"""An estimator's relative bias ‖E ĝ − g‖/‖g‖ is 'really there' above this (floating error is ~1e-14)."""

settings.register_profile(
    "ci", max_examples=60, derandomize=True, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
RTOL_BFLOAT16 = 2.0**-5
"""A bfloat16 result against float64: 4 units of bfloat16's 2^-7 resolution, relative (and absolute near 0)."""
