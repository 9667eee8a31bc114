"""The audit's configuration grid and the targets each configuration is compared with.

:class:`AuditCase` is one TRL configuration (trainer, config fields, planted bias, vBoN
reward :class:`VBoNSpec`); :func:`default_cases`, :func:`vbon_cases` and
:func:`~bonmath.trl_audit.smoke_cases` are the grids of the full, vBoN and smoke runs; :func:`~bonmath.trl_audit.targets_for`
derives, from a reading of TRL 1.16's code, which exact objectives a base-reward
configuration should (or should not) estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bonmath.trl_audit.targets import Target, _kl_rl
from bonmath.validation import check_choice, check_count

__all__ = ["GRPO_SCALE_RULES", "TRAINERS", "VBON_REFERENCE_SAMPLES", "AuditCase", "VBoNSpec",
           "default_cases", "smoke_cases", "targets_for", "vbon_cases"]

TRAINERS = ("grpo", "rloo")


@dataclass(frozen=True)
class VBoNSpec:
    """The vBoN training reward of a case: :class:`bonmath.trl.VBoNReward` of the base reward.

    Attributes
    ----------
    objective : {"exact", "bound"}
        ``exact``: R_N = log π_N - log π_ref (train with β = 1); ``bound``: log F̃, the
        log-CDF of the finite bound L̃ (train with β = 1/(N-1)).
    n : int
        N of Best-of-N.
    num_ref_samples : int, optional
        M: the CDF is estimated from M reference completions of the prompt, drawn once
        (seeded) from the enumerated reference law; None: the exact CDF of the support.

    Examples
    --------
    >>> VBoNSpec("exact", 4).name, VBoNSpec("bound", 4, num_ref_samples=16).name
    ('vBoN exact N=4, exact CDF', 'vBoN bound N=4, F̂ from M=16')
    """

    objective: str
    n: int
    num_ref_samples: int | None = None

    @property
    def name(self) -> str:
        cdf = "exact CDF" if self.num_ref_samples is None else f"F̂ from M={self.num_ref_samples}"
        return f"vBoN {self.objective} N={self.n}, {cdf}"


@dataclass(frozen=True)
class AuditCase:
    """One TRL configuration to audit.

    Attributes
    ----------
    trainer : {"grpo", "rloo"}
    config : dict
        ``GRPOConfig`` / ``RLOOConfig`` fields that differ from the audit's common
        settings (``loss_type``, ``beta``, ``scale_rewards``, ...).
    planted : bool
        Multiply TRL's advantages by (G-1)/G after the trainer computes them. For
        RLOO's leave-one-out advantages r_i - mean_{j≠i} r_j this gives exactly
        r_i - mean_j r_j, the group mean that includes the sample's own reward:
        a known bias (the gradient scaled by (G-1)/G) the audit must detect.
    vbon : VBoNSpec, optional
        Train on this vBoN reward of the base reward (targets: :func:`~bonmath.trl_audit.vbon_targets`).

    Examples
    --------
    >>> AuditCase("rloo", dict(beta=0.05), planted=True).label
    'RLOO, beta=0.05 [planted bias]'
    """

    trainer: str
    config: dict = field(default_factory=dict)
    planted: bool = False
    vbon: VBoNSpec | None = None

    @property
    def label(self) -> str:
        parts = [self.trainer.upper()] + [f"{k}={v}" for k, v in self.config.items()]
        if self.vbon is not None:
            parts.append(f"reward={self.vbon.name}")
        return ", ".join(parts) + (" [planted bias]" if self.planted else "")


GRPO_SCALE_RULES = {"grpo": "mean_inverse_length", "dapo": "inverse_mean_length",
                    "bnpo": "inverse_mean_length", "dr_grpo": "inverse_max_length"}
"""The nominal loss normalisation of each GRPO ``loss_type`` (see :func:`~bonmath.trl_audit.targets_for`)."""


def default_cases() -> list[AuditCase]:
    """The configurations of the full audit.

    GRPO: ``loss_type`` ∈ {grpo, dapo, dr_grpo, bnpo} × β ∈ {0, 0.1} ×
    ``use_bias_correction_kl`` ∈ {True, False} × ``scale_rewards`` ∈ {group, none}, where at
    β = 0 TRL computes no KL term, so ``use_bias_correction_kl`` has no effect and only
    its default (True) is run. RLOO: β ∈ {0, 0.05, 1} × ``normalize_advantages`` ∈
    {False, True}. Plus the planted bias on RLOO (β = 0 and β = 0.05, no normalisation),
    and GRPO ``dr_grpo`` with ``mask_truncated_completions=True`` (truncated completions
    leave the loss but stay in the group mean; the sampling law is unchanged). Then
    the vBoN cases of :func:`vbon_cases`.

    Examples
    --------
    16 GRPO configurations at β = 0.1, 8 at β = 0, 6 RLOO ones, 2 planted, 1 masked, 8 vBoN:

    >>> cases = default_cases()
    >>> len(cases), sum(c.planted for c in cases), sum(c.vbon is not None for c in cases)
    (41, 2, 8)
    """
    cases = []
    for loss_type in ("grpo", "dapo", "dr_grpo", "bnpo"):
        for beta in (0.0, 0.1):
            for correction in ((True,) if beta == 0 else (True, False)):
                for scale in ("group", "none"):
                    cases.append(AuditCase("grpo", dict(loss_type=loss_type, beta=beta,
                                                        use_bias_correction_kl=correction,
                                                        scale_rewards=scale)))
    for beta in (0.0, 0.05, 1.0):
        for normalize in (False, True):
            cases.append(AuditCase("rloo", dict(beta=beta, normalize_advantages=normalize)))
    for beta in (0.0, 0.05):
        cases.append(AuditCase("rloo", dict(beta=beta, normalize_advantages=False), planted=True))
    cases.append(AuditCase("grpo", dict(loss_type="dr_grpo", beta=0.1, use_bias_correction_kl=True,
                                        scale_rewards="none", mask_truncated_completions=True)))
    return cases + vbon_cases()


VBON_REFERENCE_SAMPLES = 16
"""M of the vBoN cases with an estimated CDF."""


def vbon_cases(ns: Sequence[int] = (2, 4), num_ref_samples: int = VBON_REFERENCE_SAMPLES) -> list[AuditCase]:
    """The vBoN configurations, for each N in ``ns``.

    RLOO, β = 1, ``normalize_advantages=False`` with the exact vBoN reward R_N (exact
    CDF) and with R̂_N from M = ``num_ref_samples`` reference rewards; RLOO,
    β = 1/(N-1), with the bound's reward log F̃ (exact CDF); GRPO ``dr_grpo``, β = 1,
    ``scale_rewards="none"``, bias-corrected k3, with R_N.

    Examples
    --------
    >>> [(c.trainer, c.config["beta"], c.vbon.name) for c in vbon_cases(ns=(3,), num_ref_samples=8)]
    [('rloo', 1.0, 'vBoN exact N=3, exact CDF'), ('rloo', 1.0, 'vBoN exact N=3, F̂ from M=8'), ('rloo', 0.5, 'vBoN bound N=3, exact CDF'), ('grpo', 1.0, 'vBoN exact N=3, exact CDF')]
    """
    cases = []
    for n in ns:
        rloo = dict(beta=1.0, normalize_advantages=False)
        cases += [
            AuditCase("rloo", rloo, vbon=VBoNSpec("exact", n)),
            AuditCase("rloo", rloo, vbon=VBoNSpec("exact", n, num_ref_samples)),
            AuditCase("rloo", dict(beta=1.0 / (n - 1), normalize_advantages=False), vbon=VBoNSpec("bound", n)),
            AuditCase("grpo", dict(loss_type="dr_grpo", beta=1.0, use_bias_correction_kl=True,
                                   scale_rewards="none"), vbon=VBoNSpec("exact", n)),
        ]
    return cases


def smoke_cases() -> list[AuditCase]:
    """Four cases for a fast run: unbiased RLOO, the planted bias, GRPO dr_grpo with k3, and RLOO
    with the exact vBoN reward (N = 4).

    Examples
    --------
    >>> [(c.trainer, c.planted, c.vbon is not None) for c in smoke_cases()]
    [('rloo', False, False), ('rloo', True, False), ('grpo', False, False), ('rloo', False, True)]
    """
    return [
        AuditCase("rloo", dict(beta=0.05, normalize_advantages=False)),
        AuditCase("rloo", dict(beta=0.05, normalize_advantages=False), planted=True),
        AuditCase("grpo", dict(loss_type="dr_grpo", beta=0.1, use_bias_correction_kl=True,
                               scale_rewards="none")),
        AuditCase("rloo", dict(beta=1.0, normalize_advantages=False), vbon=VBoNSpec("exact", 4)),
    ]


def _grpo_token_kl(case: AuditCase) -> tuple[str, str]:
    """The per-token KL kind whose gradient GRPO's KL term has in ``case``, and its words.

    Bias-corrected k3 (``use_bias_correction_kl``, TRL's default): the reverse KL
    KL(π_t‖ref_t); plain k3: the forward KL KL(ref_t‖π_t) (see :func:`~bonmath.trl_audit.targets_for`).
    """
    if case.config.get("use_bias_correction_kl", True):
        return "token_reverse", "KL(π_t‖ref_t)"
    return "token_forward", "KL(ref_t‖π_t)"


def targets_for(case: AuditCase, num_generations: int, eos_token_id: int | None = None) -> list[Target]:
    """The targets one case is compared with, from a reading of TRL 1.16's code.

    Parameters
    ----------
    case : AuditCase
    num_generations : int
        G, the group size.
    eos_token_id : int, optional
        Needed for GRPO with ``mask_truncated_completions=True``.

    Returns
    -------
    list of Target

    Notes
    -----
    On-policy (``num_iterations = 1``) the ratio exp(lp - sg lp) is 1 with gradient
    ∇lp, clipping is inactive, and per completion i of a group TRL's loss is:

    - GRPO: Σ_t [-A_i ∇lp_t + β ∇k_t], with A_i = r_i - mean_j r_j (divided by the
      group std for ``scale_rewards="group"``) and k_t = k3_t (∇ = (1 - e^{ref_t-lp_t})
      ∇lp_t: per-token forward KL) or ρ_t k3_t with ``use_bias_correction_kl`` (∇ =
      (lp_t - ref_t) ∇lp_t: per-token reverse KL). The mean in A_i includes r_i, which
      scales the reward part by (G-1)/G. Normalisation: ``grpo`` divides each completion
      by its length |y_i| and averages (a length-weighted objective; compared at
      c = E_θ[1/|y|]); ``dr_grpo`` divides by G·L (unbiased up to c = 1/L); ``dapo`` and
      ``bnpo`` divide by the batch's token count, a random normaliser (compared at
      c = 1/E_θ|y|; on one process with one accumulation step the two coincide).
      ``mask_truncated_completions`` zeroes the loss of completions without EOS; their
      rewards stay in the group mean, so the derived expectation weights by w(y) = 0
      on truncated completions.
    - RLOO: -A_i ∇log π(y_i), A_i = R_i - mean_{j≠i} R_j with R = r - β Σ_t (lp_t - ref_t)
      (the k1 log ratio summed in the reward), averaged over the batch: unbiased for
      E[r] - β KL(π_θ‖π_ref) at c = 1 (docs/math.md, "Gradients"), unless the
      advantages are normalised by the batch std.

    Examples
    --------
    The planted bias on RLOO (groups of G = 4): its derived expectation is 3/4 of the objective.

    >>> [(t.name, t.objective, t.expected_match) for t in targets_for(AuditCase("rloo", dict(beta=0.05), planted=True), 4)]
    [('sequence_kl', 'E[r] - 0.05 KL(π‖π_ref)', False), ('token_kl', 'E[r] - 0.05 sum_t KL(π_t‖ref_t), prefix fixed', False), ('trl_expectation', '0.75 x (E[r] - 0.05 KL(π‖π_ref))', True)]
    """
    G = check_count(num_generations, "num_generations", minimum=2)
    keep = (G - 1) / G
    beta = float(case.config.get("beta", 0.0))
    reward_only = "E[r]" if beta == 0 else f"E[r] - {beta:g} KL(π‖π_ref)"
    if case.trainer == "rloo":
        normalized = bool(case.config.get("normalize_advantages", False))
        targets = [_kl_rl("sequence_kl", reward_only, kl_weight=beta,
                          expected_match=not normalized and not case.planted)]
        if beta > 0:
            targets.append(_kl_rl("token_kl", f"E[r] - {beta:g} sum_t KL(π_t‖ref_t), prefix fixed",
                                  kl_weight=beta, kl="token_reverse"))
        if case.planted:
            targets.append(_kl_rl("trl_expectation", f"{keep:g} x ({reward_only})", reward_weight=keep,
                                  kl_weight=keep * beta, expected_match=True))
        return targets
    check_choice(case.trainer, "trainer", TRAINERS)
    loss_type = case.config.get("loss_type", "dapo")
    scale_rule = GRPO_SCALE_RULES[loss_type]
    token, token_words = _grpo_token_kl(case)
    targets = [_kl_rl("sequence_kl", reward_only, scale_rule, kl_weight=beta)]
    if beta > 0:
        targets.append(_kl_rl("token_kl", f"E[r] - {beta:g} sum_t {token_words}, prefix fixed", scale_rule,
                              kl_weight=beta, kl=token))
    if case.config.get("scale_rewards", "group") == "none" and loss_type in ("grpo", "dr_grpo"):
        weighted = loss_type == "grpo"
        masked = bool(case.config.get("mask_truncated_completions", False))
        if masked and eos_token_id is None:
            raise ValueError("mask_truncated_completions=True needs eos_token_id")
        w = " ".join(["1/len(y)"] * weighted + ["1[EOS]"] * masked)
        words = f"{keep:g} E[{w + ' ' if w else ''}(r - E r)]"
        if beta > 0:
            words += f" - {beta:g} E[{w + ' ' if w else ''}sum_t {token_words} score terms]"
        targets.append(_kl_rl("trl_expectation", words, "one" if weighted else "inverse_max_length",
                              expected_match=True, reward_weight=keep, kl_weight=beta,
                              kl=token if beta > 0 else "sequence",
                              length_weight="inverse_length" if weighted else "none",
                              mask_truncated=masked, eos_token_id=eos_token_id))
        if beta > 0 and not weighted and not masked:
            targets.append(_kl_rl("centred_sequence_kl", f"{keep:g} E[r] - {beta:g} KL(π‖π_ref)",
                                  "inverse_max_length", reward_weight=keep, kl_weight=beta))
    return targets
