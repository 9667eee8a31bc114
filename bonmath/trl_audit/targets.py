"""The audit's exact side: target objectives and their exact gradients by enumeration.

:func:`kl_rl_target_loss` is the loss whose gradient is that of E[w (r - c)] minus a
sequence-level or per-token (prefix fixed) KL; :class:`Target` names one such objective
with the scale c of TRL's loss normalisation; :func:`exact_problem` enumerates the policy
and reference once, scores the support and fixes the test directions
(:class:`ExactProblem`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from bonmath.divergences import kl_divergence
from bonmath.enumeration import EnumeratedPair
from bonmath.estimators import flat_gradient
from bonmath.trl_audit.models import TinySetup, _enumerate_pair, support_rewards
from bonmath.validation import check_choice

__all__ = ["KL_KINDS", "LENGTH_WEIGHTS", "SCALE_RULES", "ExactProblem", "Target", "exact_problem",
           "kl_rl_target_loss"]

KL_KINDS = ("sequence", "token_reverse", "token_forward")
"""``sequence``: KL(π_θ‖π_ref) of completions; ``token_*``: Σ_t of the per-token reverse
KL(π_θ‖π_ref) or forward KL(π_ref‖π_θ), the prefix distribution held fixed (gradient only)."""
LENGTH_WEIGHTS = ("none", "inverse_length")
"""Per-completion weight w(y) of a target: 1, or 1/|y| (GRPO's ``grpo`` loss)."""
SCALE_RULES = ("one", "inverse_max_length", "inverse_mean_length", "mean_inverse_length")
"""The positive constant c a target's gradient is multiplied by before the comparison:
1, 1/max_completion_length, 1/E_θ|y|, E_θ[1/|y|]."""


def _length_weights(pair: EnumeratedPair, length_weight: str, mask_truncated: bool,
                    eos_token_id: int | None) -> torch.Tensor:
    lengths = pair.mask.sum(-1).to(torch.float64)
    weights = torch.ones_like(lengths) if length_weight == "none" else 1.0 / lengths
    if mask_truncated:
        if eos_token_id is None:
            raise ValueError("mask_truncated=True needs eos_token_id")
        ended = torch.tensor([len(s) > 0 and int(s[-1]) == eos_token_id for s in pair.keys()])
        weights = torch.where(ended, weights, torch.zeros((), dtype=weights.dtype))
    return weights


def kl_rl_target_loss(
    pair: EnumeratedPair,
    rewards: torch.Tensor,
    *,
    reward_weight: float = 1.0,
    kl_weight: float = 0.0,
    kl: str = "sequence",
    length_weight: str = "none",
    mask_truncated: bool = False,
    eos_token_id: int | None = None,
) -> torch.Tensor:
    """A loss whose exact gradient is that of -(a E_θ[w (r - c)] - b D(θ)), by enumeration.

    Parameters
    ----------
    pair : EnumeratedPair
        Policy (with autograd graph) and reference on one support.
    rewards : tensor of shape (S,)
    reward_weight, kl_weight : float
        a and b.
    kl : one of :data:`~bonmath.trl_audit.KL_KINDS`
    length_weight : one of :data:`~bonmath.trl_audit.LENGTH_WEIGHTS`
        w(y) = 1 or 1/|y|; ``kl="sequence"`` with ``kl_weight != 0`` needs ``"none"``.
    mask_truncated : bool
        Also set w(y) = 0 on completions that do not end with ``eos_token_id`` (TRL's
        ``mask_truncated_completions``: they leave the loss, not the group mean).
    eos_token_id : int, optional
        Needed by ``mask_truncated``.

    Returns
    -------
    scalar tensor

    Notes
    -----
    With π = π_θ, c = E_θ[r] held fixed, lp_t = log π_θ(y_t|y_<t), ref_t likewise:

    - reward part: -a Σ_y π(y) w(y) (r(y) - c); for w = 1 its gradient is -a ∇E_θ[r];
    - ``sequence``: + b KL(π_θ‖π_ref);
    - ``token_reverse``: + b Σ_y sg(π(y)) w(y) Σ_t sg(lp_t - ref_t) lp_t, whose gradient
      E[w Σ_t (lp_t - ref_t) ∇lp_t] is, for w = 1, Σ_t ∇ E_{y_<t ~ sg π}[KL(π_t‖ref_t)];
    - ``token_forward``: + b Σ_y sg(π(y)) w(y) Σ_t sg(1 - e^{ref_t - lp_t}) lp_t, gradient
      Σ_t ∇ E_{y_<t ~ sg π}[KL(ref_t‖π_t)] for w = 1.

    The ``token_*`` values are surrogates; only their gradients are meaningful.
    With w = 1/|y| and a = (G-1)/G this is the expectation of GRPO's ``grpo`` loss
    (group-mean centring scales the reward part by (G-1)/G; docs/math.md, "Gradients").

    Examples
    --------
    A two-token tabular policy and a uniform reference on (EOS), (1, EOS), (1, 1), the
    reward counting token 1: with the sequence KL the gradient is the exact KL-RL one;
    the per-token reverse KL with the prefix fixed has another gradient than ∇KL(π_θ‖π_ref)
    = (-0.2184, 0.2184, 0.1437, -0.1437):

    >>> import torch, bonmath
    >>> from bonmath.estimators import exact_gradient
    >>> logits = torch.tensor([[0.0, 1.0], [0.5, -0.5]], dtype=torch.float64, requires_grad=True)
    >>> uniform = bonmath.TabularLM.from_logits([torch.zeros(1, 2, dtype=torch.float64)] * 2)
    >>> pair = bonmath.enumerate_pair(bonmath.TabularLM.from_logits([logits[:1], logits[1:]]), uniform)
    >>> rewards = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    >>> exact = exact_gradient("kl_rl", pair.policy_log_probs, pair.ref_log_probs, [logits], rewards=rewards, beta=0.1)
    >>> bool(torch.allclose(flat_gradient(kl_rl_target_loss(pair, rewards, kl_weight=0.1), [logits]), exact))
    True
    >>> flat_gradient(kl_rl_target_loss(pair, rewards, reward_weight=0.0, kl_weight=1.0, kl="token_reverse"), [logits]).tolist()
    [-0.1966, 0.1966, 0.1437, -0.1437]
    """
    check_choice(kl, "kl", KL_KINDS)
    check_choice(length_weight, "length_weight", LENGTH_WEIGHTS)
    if kl_weight != 0.0 and kl == "sequence" and (length_weight != "none" or mask_truncated):
        raise ValueError("kl='sequence' is a property of whole completions: it needs length_weight='none' "
                         "and mask_truncated=False")
    log_probs = pair.policy_log_probs
    probs = log_probs.exp()
    weights = _length_weights(pair, length_weight, mask_truncated, eos_token_id)
    centred = rewards - (probs.detach() * rewards).sum()
    loss = -reward_weight * (probs * weights * centred).sum()
    if kl_weight == 0.0:
        return loss
    if kl == "sequence":
        return loss + kl_weight * kl_divergence(log_probs, pair.ref_log_probs)
    mask = pair.mask
    lp, ref = pair.token_log_probs, pair.ref_token_log_probs
    log_ratio = (lp - ref).detach()
    per_token = log_ratio if kl == "token_reverse" else -torch.expm1(-log_ratio)
    per_token = torch.where(mask, per_token, torch.zeros((), dtype=per_token.dtype))
    surrogate = (probs.detach() * weights * (per_token * lp).sum(-1)).sum()
    return loss + kl_weight * surrogate


@dataclass(frozen=True)
class Target:
    """An exact objective to compare TRL's expected gradient with.

    Attributes
    ----------
    name : str
        ``sequence_kl``, ``token_kl``, ``trl_expectation`` or any other label.
    objective : str
        The objective in words (for the JSON and the table).
    loss : callable (EnumeratedPair, rewards) -> scalar tensor
        -J; its gradient w.r.t. the policy parameters is the target (see
        :func:`kl_rl_target_loss`; any function works, e.g. a vBoN target).
    scale_rule : one of :data:`~bonmath.trl_audit.SCALE_RULES`
        How TRL's loss normalisation scales the comparison.
    expected_match : bool
        Whether reading TRL's code predicts E ĝ = c ∇(-J) exactly (tests check these pass).

    Examples
    --------
    The scale c = 1/E_θ|y| of a target, for a uniform policy on (EOS), (1, EOS), (1, 1),
    whose lengths 1, 2, 2 have probabilities 1/2, 1/4, 1/4:

    >>> import torch, bonmath
    >>> logits = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    >>> policy = bonmath.TabularLM.from_logits([logits[:1], logits[1:]])
    >>> pair = bonmath.enumerate_pair(policy, bonmath.TabularLM.from_logits([logits.detach()[:1]] * 2))
    >>> target = Target("reward", "E[r]", kl_rl_target_loss, scale_rule="inverse_mean_length")
    >>> target.scale(pair, max_completion_length=2)
    0.666666666667
    """

    name: str
    objective: str
    loss: Callable[[EnumeratedPair, torch.Tensor], torch.Tensor]
    scale_rule: str = "one"
    expected_match: bool = False

    def scale(self, pair: EnumeratedPair, max_completion_length: int) -> float:
        """The constant c > 0 for this target on ``pair``."""
        check_choice(self.scale_rule, "scale_rule", SCALE_RULES)
        probs = pair.policy_log_probs.detach().exp()
        lengths = pair.mask.sum(-1).to(torch.float64)
        return {
            "one": 1.0,
            "inverse_max_length": 1.0 / max_completion_length,
            "inverse_mean_length": float(1.0 / (probs @ lengths)),
            "mean_inverse_length": float(probs @ (1.0 / lengths)),
        }[self.scale_rule]


def _kl_rl(name: str, objective: str, scale_rule: str = "one", expected_match: bool = False,
           **kwargs) -> Target:
    def loss(pair: EnumeratedPair, rewards: torch.Tensor) -> torch.Tensor:
        return kl_rl_target_loss(pair, rewards, **kwargs)

    return Target(name, objective, loss, scale_rule, expected_match)


@dataclass
class ExactProblem:
    """Everything exact the audit needs, computed once.

    Attributes
    ----------
    pair : EnumeratedPair
        Policy (``setup.policy``, with graph) and reference on TRL's sampling support.
    rewards : tensor of shape (S,)
    params : list of tensors
        The policy parameters; TRL's trainers hold deep copies, in the same order.
    directions : tensor of shape (K, P)
        Unit directions: the gradients of E[r], of E[(r - E r)/|y|], of the three
        KL kinds, then ``random_directions`` Gaussian ones (fixed seed).
    summary : dict
        Support size, E[r], KL, E|y| and the like.

    Examples
    --------
    The exact gradient of a target, here the sequence-level KL-RL loss at β = 0.1, is
    bonmath's exact KL-RL gradient through the enumeration (7 completions, 6768 parameters):

    >>> import tempfile, torch
    >>> from bonmath.estimators import exact_gradient
    >>> from bonmath.trl_audit import build_tiny_setup, count_token_reward
    >>> folder = tempfile.TemporaryDirectory()
    >>> setup = build_tiny_setup(folder.name, vocab_size=3, max_completion_length=2, seed=1)
    >>> problem = exact_problem(setup, count_token_reward(1))
    >>> problem.pair.keys()[:3], problem.rewards.tolist(), problem.directions.shape
    ([(0,), (1, 0), (1, 1)], [0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 0.0], torch.Size([8, 6768]))
    >>> target = Target("sequence_kl", "E[r] - 0.1 KL(π‖π_ref)",
    ...                 lambda pair, rewards: kl_rl_target_loss(pair, rewards, kl_weight=0.1))
    >>> want = exact_gradient("kl_rl", problem.pair.policy_log_probs, problem.pair.ref_log_probs, problem.params,
    ...                       rewards=problem.rewards, beta=0.1)
    >>> bool(torch.allclose(problem.gradient(target), want))
    True
    >>> folder.cleanup()
    """

    pair: EnumeratedPair
    rewards: torch.Tensor
    params: list
    directions: torch.Tensor
    summary: dict

    def gradient(self, target: Target) -> torch.Tensor:
        """∇(-J) of a target, exact, flattened."""
        return flat_gradient(target.loss(self.pair, self.rewards), self.params)


def exact_problem(setup: TinySetup, reward_func: Callable[..., Sequence[float]], *,
                  temperature: float = 1.0, random_directions: int = 3, seed: int = 0) -> ExactProblem:
    """Enumerate the policy and reference, score the support, fix the test directions.

    Examples
    --------
    The policy law on the 7 completions of the tiny setup sums to 1; its summary is what the
    audit's JSON reports under ``meta["exact"]``; the test directions are unit vectors:

    >>> import tempfile
    >>> from bonmath.trl_audit import build_tiny_setup, count_token_reward
    >>> folder = tempfile.TemporaryDirectory()
    >>> setup = build_tiny_setup(folder.name, vocab_size=3, max_completion_length=2, seed=1)
    >>> problem = exact_problem(setup, count_token_reward(1), random_directions=1)
    >>> round(float(problem.pair.policy_log_probs.detach().exp().sum()), 12), problem.summary["support_size"]
    (1.0, 7)
    >>> [round(problem.summary[key], 4) for key in ("expected_reward", "kl_policy_reference", "expected_length")]
    [0.4431, 0.1058, 1.8578]
    >>> problem.summary["directions"][-2:], [round(float(norm), 12) for norm in problem.directions.norm(dim=1)]
    (['grad sum_t KL(ref_t||pi_t)', 'random 0'], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    >>> folder.cleanup()
    """
    pair = _enumerate_pair(setup, setup.policy, temperature)
    rewards = support_rewards(reward_func, setup, pair.keys())
    params = [p for p in setup.policy.parameters() if p.requires_grad]
    basis = [
        kl_rl_target_loss(pair, rewards),
        kl_rl_target_loss(pair, rewards, length_weight="inverse_length"),
        *(kl_rl_target_loss(pair, rewards, reward_weight=0.0, kl_weight=1.0, kl=kind) for kind in KL_KINDS),
    ]
    vectors = [flat_gradient(loss, params) for loss in basis]
    generator = torch.Generator().manual_seed(seed + 2)
    vectors += [torch.randn(vectors[0].shape, generator=generator, dtype=torch.float64)
                for _ in range(random_directions)]
    directions = torch.stack([v / v.norm() for v in vectors])
    probs = pair.policy_log_probs.detach().exp()
    lengths = pair.mask.sum(-1).to(torch.float64)
    truncated = torch.tensor([s[-1] != setup.eos_token_id for s in pair.keys()])
    summary = {
        "support_size": len(pair.keys()),
        "num_params": int(directions.shape[1]),
        "expected_reward": float(probs @ rewards),
        "kl_policy_reference": float(kl_divergence(pair.policy_log_probs.detach(), pair.ref_log_probs)),
        "expected_length": float(probs @ lengths),
        "truncated_mass": float(probs[truncated].sum()),
        "reward_values": sorted({float(r) for r in rewards}),
        "directions": ["grad E[r]", "grad E[(r - E r)/|y|]", "grad KL(pi||ref)",
                       "grad sum_t KL(pi_t||ref_t)", "grad sum_t KL(ref_t||pi_t)"]
        + [f"random {i}" for i in range(random_directions)],
    }
    return ExactProblem(pair, rewards, params, directions, summary)
