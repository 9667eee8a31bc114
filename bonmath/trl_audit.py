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
  KL(π_ref‖π_θ) for GRPO's plain k3 (REFERENCE.md, "Gradients");
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
completions). This module imports torch and transformers; datasets and trl are
imported when a trainer is built (``import bonmath`` imports none of them).
Runs need no network: the models are built and saved locally.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
import torch
from scipy import special, stats

from bonmath.divergences import kl_divergence
from bonmath.enumeration import EnumeratedPair, enumerate_pair, string_keys, string_positions
from bonmath.estimators import flat_gradient, objective_loss
from bonmath.hf import CausalLMPolicy
from bonmath.objectives import vbon_finite_lower_bound
from bonmath.validation import check_choice, check_count

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

TRAINERS = ("grpo", "rloo")
KL_KINDS = ("sequence", "token_reverse", "token_forward")
"""``sequence``: KL(π_θ‖π_ref) of completions; ``token_*``: Σ_t of the per-token reverse
KL(π_θ‖π_ref) or forward KL(π_ref‖π_θ), the prefix distribution held fixed (gradient only)."""
LENGTH_WEIGHTS = ("none", "inverse_length")
"""Per-completion weight w(y) of a target: 1, or 1/|y| (GRPO's ``grpo`` loss)."""
SCALE_RULES = ("one", "inverse_max_length", "inverse_mean_length", "mean_inverse_length")
"""The positive constant c a target's gradient is multiplied by before the comparison:
1, 1/max_completion_length, 1/E_θ|y|, E_θ[1/|y|]."""
EOS = "<eos>"
"""The tiny tokenizer's EOS word (id 0); it is also the padding token."""
Z_MATCH = 5.0
"""A row "matches" its target when bias_z <= Z_MATCH (two-sided family-wise p >= 5.7e-7)."""


# ---------------------------------------------------------------------------- the models


@dataclass
class TinySetup:
    """A tiny GPT-2 reference saved to disk, a perturbed policy, and their tokenizer.

    Attributes
    ----------
    reference_path : str
        Folder with the reference weights (float64) and the tokenizer. The policy's
        ``config._name_or_path`` is this folder, which is where TRL loads its
        reference model from when ``beta != 0``.
    policy, reference : GPT2LMHeadModel
        float64, no dropout; the reference frozen.
    tokenizer : PreTrainedTokenizerFast
        Word-level: ``<eos>`` (id 0, also padding) and the words a, b, c, ...
    prompt : str
    prompt_ids : tuple of int
    max_completion_length : int
    """

    reference_path: str
    policy: Any
    reference: Any
    tokenizer: Any
    prompt: str
    prompt_ids: tuple[int, ...]
    max_completion_length: int

    @property
    def eos_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)


def build_tiny_setup(
    folder: str | os.PathLike,
    *,
    vocab_size: int = 5,
    max_completion_length: int = 3,
    seed: int = 0,
    scale: float = 3.0,
    noise: float = 2.0,
    prompt: str = "a b",
) -> TinySetup:
    """Build and save a seeded tiny GPT-2 reference, and a perturbed policy loaded from it.

    Parameters
    ----------
    folder : path
        The reference and its tokenizer are written to ``folder/reference``.
    vocab_size : int
        V >= 2 tokens: EOS (id 0) and V - 1 words ``a, b, c, ...`` (V <= 27).
    max_completion_length : int
        L >= 1; the support has Σ_{t<L} (V-1)^t + (V-1)^L completions.
    seed : int
        Seeds the reference weights (``seed``) and the perturbation (``seed + 1``).
    scale : float
        Factor on the (tied) token embeddings: next-token distributions away from uniform.
    noise : float
        Policy = reference + ``noise`` · std(parameter) · N(0, 1), per parameter: KL > 0.
    prompt : str
        Whitespace-separated words of the vocabulary.

    Returns
    -------
    TinySetup

    Examples
    --------
    >>> import tempfile
    >>> setup = build_tiny_setup(tempfile.mkdtemp(), vocab_size=4, max_completion_length=2)
    >>> setup.prompt_ids, setup.tokenizer.convert_ids_to_tokens([0, 1, 2, 3])
    ((1, 2), ['<eos>', 'a', 'b', 'c'])
    >>> setup.policy.config._name_or_path == setup.reference_path
    True
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab_size = check_count(vocab_size, "vocab_size", minimum=2)
    if vocab_size > 27:
        raise ValueError(f"vocab_size must be <= 27 (EOS and the words a..z), got {vocab_size}")
    max_completion_length = check_count(max_completion_length, "max_completion_length")
    words = [EOS] + [chr(ord("a") + i) for i in range(vocab_size - 1)]
    vocab = {w: i for i, w in enumerate(words)}
    unknown = [w for w in prompt.split() if w not in vocab]
    if not prompt.split() or unknown:
        raise ValueError(f"prompt must be non-empty words of {words[1:]}, got {prompt!r}")
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOS))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=EOS, unk_token=EOS)
    prompt_ids = tuple(tokenizer(prompt)["input_ids"])
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=len(prompt_ids) + max_completion_length + 4,
        n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0, pad_token_id=0,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # training mode = eval mode
    )
    torch.manual_seed(seed)
    reference = GPT2LMHeadModel(config)
    with torch.no_grad():
        reference.transformer.wte.weight.mul_(scale)
    path = Path(folder) / "reference"
    # PreTrainedModel.to is declared with @wraps(torch.nn.Module.to): mypy then types the bound
    # method as still taking self, so the dtype is reported as the wrong first argument
    reference.to(torch.float64).save_pretrained(path)  # type: ignore[arg-type]
    tokenizer.save_pretrained(path)
    reference = GPT2LMHeadModel.from_pretrained(path, dtype=torch.float64).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    policy = GPT2LMHeadModel.from_pretrained(path, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(noise * p.std() * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return TinySetup(
        reference_path=str(path), policy=policy, reference=reference, tokenizer=tokenizer,
        prompt=prompt, prompt_ids=prompt_ids, max_completion_length=max_completion_length,
    )


def count_token_reward(token_id: int = 1, value: float = 1.0) -> Callable[..., list[float]]:
    """A TRL reward function: ``value`` times the number of ``token_id`` in the completion.

    Deterministic in the completion ids, with many ties (85 completions, 4 values).
    A small ``value`` makes the KL term matter against the reward at a small β.

    Examples
    --------
    >>> reward = count_token_reward(1)
    >>> reward(prompts=["a b"] * 2, completions=["a a", "b"], completion_ids=[[1, 1, 0], [2, 0]])
    [2.0, 0.0]
    """

    def count_token(prompts, completions, completion_ids, **kwargs) -> list[float]:
        return [value * sum(1 for t in ids if t == token_id) for ids in completion_ids]

    count_token.__name__ = f"count_token_{token_id}"
    return count_token


# ------------------------------------------------------------------------- exact side


class _PolicySettings(TypedDict):
    max_new_tokens: int
    eos_token_id: int | None
    top_k: int | None
    temperature: float


def _enumerate_pair(setup: TinySetup, policy_model, temperature: float) -> EnumeratedPair:
    """Policy and reference on the support TRL samples from (the one enumeration of this module).

    TRL's generation: ``do_sample=True``, ``temperature``, top_k = 0 and top_p = 1 (no
    truncation), EOS = the tokenizer's, at most ``max_completion_length`` tokens; its
    loss scores tokens with ``log_softmax(logits / temperature)``. ``CausalLMPolicy``
    with the same temperature, no top-k and the same EOS and length is that law.
    """
    settings = _PolicySettings(max_new_tokens=setup.max_completion_length, eos_token_id=setup.eos_token_id,
                               top_k=None, temperature=temperature)
    policy = CausalLMPolicy(policy_model, setup.prompt_ids, **settings)
    reference = CausalLMPolicy(setup.reference, setup.prompt_ids, **settings)
    return enumerate_pair(policy, reference)


def _noop(*args, **kwargs) -> None:
    return None


def support_rewards(reward_func: Callable[..., Sequence[float]], setup: TinySetup, sequences, *,
                    float32: bool = True) -> torch.Tensor:
    """The TRL reward function's value on every enumerated completion, as TRL uses it.

    Called as ``GRPOTrainer`` calls a reward function (``prompts``, decoded
    ``completions`` with special tokens skipped, ``completion_ids``, and the
    ``trainer_state``/``log_extra``/``log_metric`` keywords, here None and no-ops),
    then rounded to float32 like TRL's reward tensor (``float32=False``: the float64
    values the function returned).

    Returns
    -------
    float64 tensor of shape (S,)

    Raises
    ------
    ValueError
        If the reward function returns the wrong number of values or a non-finite one.
    """
    ids = [list(s) for s in string_keys(sequences)]
    completions = setup.tokenizer.batch_decode(ids, skip_special_tokens=True)
    values = reward_func(prompts=[setup.prompt] * len(ids), completions=completions, completion_ids=ids,
                         trainer_state=None, log_extra=_noop, log_metric=_noop)
    values = [float("nan") if v is None else float(v) for v in values]
    if len(values) != len(ids) or not all(math.isfinite(v) for v in values):
        raise ValueError(f"reward_func must return {len(ids)} finite rewards, got {values[:8]}...")
    return torch.tensor(values, dtype=torch.float32 if float32 else torch.float64).to(torch.float64)


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
    kl : one of :data:`KL_KINDS`
    length_weight : one of :data:`LENGTH_WEIGHTS`
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
    (group-mean centring scales the reward part by (G-1)/G; REFERENCE.md, "Gradients").
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
    scale_rule : one of :data:`SCALE_RULES`
        How TRL's loss normalisation scales the comparison.
    expected_match : bool
        Whether reading TRL's code predicts E ĝ = c ∇(-J) exactly (tests check these pass).
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


# --------------------------------------------------------------------------- the cases


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
    reference_samples : int, optional
        M: the CDF is estimated from M reference completions of the prompt, drawn once
        (seeded) from the enumerated reference law; None: the exact CDF of the support.
    """

    objective: str
    n: int
    reference_samples: int | None = None

    @property
    def name(self) -> str:
        cdf = "exact CDF" if self.reference_samples is None else f"F̂ from M={self.reference_samples}"
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
        Train on this vBoN reward of the base reward (targets: :func:`vbon_targets`).
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
"""The nominal loss normalisation of each GRPO ``loss_type`` (see :func:`targets_for`)."""


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


def vbon_cases(ns: Sequence[int] = (2, 4), reference_samples: int = VBON_REFERENCE_SAMPLES) -> list[AuditCase]:
    """The vBoN configurations, for each N in ``ns``.

    RLOO, β = 1, ``normalize_advantages=False`` with the exact vBoN reward R_N (exact
    CDF) and with R̂_N from M = ``reference_samples`` reference rewards; RLOO,
    β = 1/(N-1), with the bound's reward log F̃ (exact CDF); GRPO ``dr_grpo``, β = 1,
    ``scale_rewards="none"``, bias-corrected k3, with R_N.
    """
    cases = []
    for n in ns:
        rloo = dict(beta=1.0, normalize_advantages=False)
        cases += [
            AuditCase("rloo", rloo, vbon=VBoNSpec("exact", n)),
            AuditCase("rloo", rloo, vbon=VBoNSpec("exact", n, reference_samples)),
            AuditCase("rloo", dict(beta=1.0 / (n - 1), normalize_advantages=False), vbon=VBoNSpec("bound", n)),
            AuditCase("grpo", dict(loss_type="dr_grpo", beta=1.0, use_bias_correction_kl=True,
                                   scale_rewards="none"), vbon=VBoNSpec("exact", n)),
        ]
    return cases


def smoke_cases() -> list[AuditCase]:
    """Four cases for a fast run: unbiased RLOO, the planted bias, GRPO dr_grpo with k3, and RLOO
    with the exact vBoN reward (N = 4)."""
    return [
        AuditCase("rloo", dict(beta=0.05, normalize_advantages=False)),
        AuditCase("rloo", dict(beta=0.05, normalize_advantages=False), planted=True),
        AuditCase("grpo", dict(loss_type="dr_grpo", beta=0.1, use_bias_correction_kl=True,
                               scale_rewards="none")),
        AuditCase("rloo", dict(beta=1.0, normalize_advantages=False), vbon=VBoNSpec("exact", 4)),
    ]


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
      E[r] - β KL(π_θ‖π_ref) at c = 1 (REFERENCE.md, "Gradients"), unless the
      advantages are normalised by the batch std.
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
    correction = bool(case.config.get("use_bias_correction_kl", True))
    token = "token_reverse" if correction else "token_forward"
    token_words = "KL(π_t‖ref_t)" if correction else "KL(ref_t‖π_t)"
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


# ---------------------------------------------------------------------- the TRL side


def make_trainer(
    case: AuditCase,
    setup: TinySetup,
    reward_func: Callable[..., Sequence[float]],
    *,
    num_generations: int,
    groups: int,
    output_dir: str | os.PathLike,
    seed: int = 0,
    temperature: float = 1.0,
):
    """Build TRL's trainer for ``case`` on a fresh copy of the policy.

    Common settings: ``use_cpu=True``, ``bf16=False`` (TRL's default bf16 would
    autocast the float64 model), ``gradient_checkpointing=False`` (no effect on the
    gradient, only on speed), ``per_device_train_batch_size = groups · G`` (``groups``
    groups of G completions of one prompt per step), one accumulation step,
    ``num_iterations = 1`` (on-policy), ``max_completion_length = L``,
    ``report_to="none"``, no saving, ``temperature``; all else TRL's defaults.
    The reference model is loaded by TRL itself from ``setup.reference_path``.
    """
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    check_choice(case.trainer, "trainer", TRAINERS)
    G = check_count(num_generations, "num_generations", minimum=2)
    groups = check_count(groups, "groups")
    common: dict[str, Any] = dict(  # keyword arguments of both TRL configs, which check them
        output_dir=str(output_dir), use_cpu=True, bf16=False, fp16=False, report_to="none",
        save_strategy="no", logging_steps=10**9, gradient_checkpointing=False, seed=seed,
        per_device_train_batch_size=groups * G, num_generations=G,
        max_completion_length=setup.max_completion_length, temperature=temperature,
    )
    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if case.trainer == "grpo" else (RLOOConfig, RLOOTrainer)
    args = config_cls(**common, **case.config)
    dataset = Dataset.from_dict({"prompt": [setup.prompt] * groups})
    # TRL types a reward function as returning exactly list[float | None] (list is invariant),
    # so a list[float] return does not match; TRL only iterates the rewards
    trl_reward_func = cast("Callable[..., list[float | None]]", reward_func)
    trainer = trainer_cls(model=copy.deepcopy(setup.policy), reward_funcs=trl_reward_func,
                          args=args,  # type: ignore[arg-type]  # mypy cannot tie config_cls to trainer_cls
                          train_dataset=dataset, processing_class=setup.tokenizer)
    if case.planted:
        _plant_group_mean_bias(trainer, G)
    return trainer


def _plant_group_mean_bias(trainer, num_generations: int) -> None:
    """Scale the advantages the trainer computed by (G-1)/G (see :class:`AuditCase`)."""
    compute = trainer._generate_and_score_completions
    keep = (num_generations - 1) / num_generations

    def planted(inputs):
        output = compute(inputs)
        output["advantages"] = output["advantages"] * keep
        return output

    trainer._generate_and_score_completions = planted


class _RecordingReward:
    """Wraps a reward function and counts the completion ids TRL passes to it."""

    def __init__(self, func: Callable[..., Sequence[float]]) -> None:
        self.func = func
        self.__name__ = getattr(func, "__name__", "reward")
        self.counts: Counter = Counter()

    def __call__(self, prompts, completions, completion_ids, **kwargs):
        self.counts.update(tuple(int(t) for t in ids) for ids in completion_ids)
        return self.func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)


@dataclass
class GradientSample:
    """R draws of TRL's gradient and the completions it generated for them.

    Attributes
    ----------
    gradients : float64 tensor of shape (R, P)
        ``.grad`` of the policy parameters after each ``training_step``, flattened in
        ``model.parameters()`` order.
    completion_counts : Counter
        Completion (tuple of ids) -> how many times TRL generated it.
    seconds : float
    """

    gradients: torch.Tensor
    completion_counts: Counter
    seconds: float


def sample_trl_gradients(
    case: AuditCase,
    setup: TinySetup,
    reward_func: Callable[..., Sequence[float]],
    *,
    repetitions: int,
    num_generations: int,
    groups: int,
    output_dir: str | os.PathLike,
    seed: int = 0,
    temperature: float = 1.0,
    progress: Callable[[], None] | None = None,
) -> GradientSample:
    """Run TRL's ``training_step`` ``repetitions`` times at fixed parameters and read ``.grad``.

    Each step takes the next generation batch from the trainer's own dataloader and
    goes through ``trainer.training_step`` (generation, reward, advantages, loss,
    backward). Gradients are zeroed before each step; no optimizer exists, so the
    parameters never move.
    """
    repetitions = check_count(repetitions, "repetitions", minimum=2)
    recorder = _RecordingReward(reward_func)
    trainer = make_trainer(case, setup, recorder, num_generations=num_generations, groups=groups,
                           output_dir=output_dir, seed=seed, temperature=temperature)
    trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps
    model = trainer.model
    params = [p for p in model.parameters() if p.requires_grad]
    loader = trainer.get_train_dataloader()
    batches = iter(loader)
    rows = []
    started = time.perf_counter()
    for _ in range(repetitions):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        model.zero_grad(set_to_none=True)
        trainer.training_step(model, batch, None)
        rows.append(torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).to(torch.float64)
            for p in params
        ]))
        if progress is not None:
            progress()
    return GradientSample(torch.stack(rows), recorder.counts, time.perf_counter() - started)


# ------------------------------------------------------------------------- statistics


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

    Notes
    -----
    The statistic: for each direction t_k = (ū_k - ⟨u_k, g⟩)/(s_k/√R), with ū_k, s_k the
    mean and standard deviation of ⟨u_k, ĝ_r⟩; under H0: E ĝ = g each t_k is Student-t
    with R - 1 degrees of freedom (the ĝ_r are means of many groups, close to normal).
    The family-wise two-sided p-value of max_k |t_k| is bounded by Bonferroni,
    p = min(1, 2K P(t_{R-1} > max_k |t_k|)), and reported as the normal z with the same
    two-sided tail: bias_z = Φ^{-1}(1 - p/2). Under H0, P(bias_z > 5) <= 5.7e-7.
    """
    R, K = gradients.shape[0], directions.shape[0]
    if R < 2:
        raise ValueError(f"gradients must hold at least 2 draws, got {R}")
    mean = gradients.mean(0)
    norm = float(target.norm())
    if norm == 0.0:
        raise ValueError("the target gradient is 0: relative bias is undefined")
    total_variance = float(((gradients - mean) ** 2).sum(1).sum()) / (R - 1)
    projections = gradients @ directions.T
    se = projections.std(0, unbiased=True) / math.sqrt(R)
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


# -------------------------------------------------------------------------- the audit


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
    """Enumerate the policy and reference, score the support, fix the test directions."""
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

    With ``spec.reference_samples = M`` the M reference completions are drawn once from
    the enumerated reference law (``numpy.random.default_rng(seed + 3)``) and scored with
    ``base_reward``; otherwise the reward gets the exact CDF of the support (``exact_cdf``).

    Notes
    -----
    The biases of an estimated CDF are exact here: π̂_N ∝ π_ref e^{R̂_N} is known on the
    support, so KL(π_θ‖π̂_N) - KL(π_θ‖π_N) and the gradient gap are evaluated exactly
    (:class:`bonmath.trl.VBoNReward`, Notes).
    """
    from bonmath.trl import VBoNReward

    check_choice(spec.objective, "spec.objective", ("exact", "bound"))
    pair = _enumerate_pair(setup, setup.policy, temperature)
    base = support_rewards(base_reward, setup, pair.keys(), float32=False)
    ref_log_probs = pair.ref_log_probs.detach()
    summary: dict = {"name": spec.name, "n": spec.n, "objective": spec.objective,
                     "reference_samples": spec.reference_samples}
    if spec.reference_samples is None:
        reward_func = VBoNReward(base_reward, spec.n, objective=spec.objective,
                                 exact_cdf={setup.prompt: (base.numpy(), ref_log_probs.numpy())})
    else:
        m = check_count(spec.reference_samples, "spec.reference_samples")
        probs = ref_log_probs.exp().numpy()
        drawn = np.random.default_rng(seed + 3).choice(len(probs), size=m, p=probs / probs.sum())
        reference = sorted(float(base[i]) for i in drawn)
        summary["reference_rewards"] = reference
        reward_func = VBoNReward(base_reward, spec.n, objective=spec.objective,
                                 reference_rewards={setup.prompt: reference})
    problem = exact_problem(setup, reward_func, temperature=temperature,
                            random_directions=random_directions, seed=seed)
    base = support_rewards(base_reward, setup, problem.pair.keys(), float32=False)
    training = torch.as_tensor(reward_func.training_rewards(setup.prompt, base.numpy()), dtype=torch.float64)
    vbon = VBoNProblem(spec, reward_func, problem, base, training, summary)
    with torch.no_grad():
        pair = problem.pair
        summary["kl_policy_bon"] = float(vbon.bon_loss(pair, problem.rewards))
        if spec.reference_samples is not None:
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
      reward factor and the per-token KL gradient, predicted unbiased; see :func:`targets_for`).
    """
    spec = vbon.spec
    n = spec.n
    if case.trainer == "rloo":
        if case.config.get("normalize_advantages", False):
            raise ValueError("vBoN targets assume RLOO with normalize_advantages=False")
        if spec.objective == "bound":
            if spec.reference_samples is not None:
                raise ValueError("vBoN bound targets are implemented for the exact CDF only")
            scaled = vbon.bon_loss
            return [Target("vbon_bound", f"L̃/({n}-1), L̃ = log N + (N-1) E[log F̃] - KL(π‖π_ref)",
                           vbon.bound_loss, expected_match=True),
                    Target("vbon_scaled", f"-KL(π‖π_N)/({n}-1)",
                           lambda pair, rewards: scaled(pair, rewards) / (n - 1))]
        if spec.reference_samples is None:
            return [Target("vbon", "-KL(π‖π_N)", vbon.bon_loss, expected_match=True)]
        return [Target("vbon_estimated", f"-KL(π‖π̂_N), F̂ from M={spec.reference_samples}",
                       vbon.estimated_bon_loss, expected_match=True),
                Target("vbon", "-KL(π‖π_N)", vbon.bon_loss)]
    check_choice(case.trainer, "trainer", TRAINERS)
    if case.config.get("loss_type") != "dr_grpo" or case.config.get("scale_rewards") != "none":
        raise ValueError("vBoN targets for GRPO assume loss_type='dr_grpo' and scale_rewards='none'")
    beta = float(case.config.get("beta", 0.0))
    keep = (check_count(num_generations, "num_generations", minimum=2) - 1) / num_generations
    correction = bool(case.config.get("use_bias_correction_kl", True))
    token = "token_reverse" if correction else "token_forward"
    words = "KL(π_t‖ref_t)" if correction else "KL(ref_t‖π_t)"
    return [
        Target("vbon", "-KL(π‖π_N)", vbon.bon_loss, "inverse_max_length"),
        _kl_rl("token_kl", f"E[R_N] - {beta:g} sum_t {words}, prefix fixed", "inverse_max_length",
               kl_weight=beta, kl=token),
        _kl_rl("trl_expectation", f"{keep:g} E[(R_N - E R_N)] - {beta:g} E[sum_t {words} score terms]",
               "inverse_max_length", expected_match=True, reward_weight=keep, kl_weight=beta, kl=token),
    ]


def audit_case(
    case: AuditCase,
    setup: TinySetup,
    problem: ExactProblem,
    reward_func: Callable[..., Sequence[float]],
    *,
    repetitions: int,
    num_generations: int,
    groups: int,
    output_dir: str | os.PathLike,
    seed: int = 0,
    temperature: float = 1.0,
    targets: Sequence[Target] | None = None,
    progress: Callable[[], None] | None = None,
) -> tuple[list[dict], GradientSample]:
    """Sample TRL's gradient for one case and compare it with each target.

    ``targets`` defaults to :func:`targets_for`; pass others (e.g. a vBoN objective
    with a vBoN reward function) to audit them the same way.

    Returns
    -------
    rows : list of dict
        One per target: the case, the target, :func:`bias_statistics`, the
        :func:`sampling_law_test` of this case's completions, R, versions, and
        ``exact_relative_bias`` = ‖ḡ - c g‖/‖c g‖ with ḡ the exact expectation of TRL's
        gradient derived from its code (the case's ``expected_match`` target; its own
        row checks the derivation against TRL), None where no closed form is known.
    sample : GradientSample
    """
    import trl

    sample = sample_trl_gradients(case, setup, reward_func, repetitions=repetitions,
                                  num_generations=num_generations, groups=groups,
                                  output_dir=output_dir, seed=seed, temperature=temperature,
                                  progress=progress)
    law = sampling_law_test(sample.completion_counts, problem.pair.keys(), problem.pair.policy_log_probs)
    rows = []
    if targets is None:
        targets = targets_for(case, num_generations, setup.eos_token_id)
    scaled = [t.scale(problem.pair, setup.max_completion_length) * problem.gradient(t) for t in targets]
    derived = next((g for t, g in zip(targets, scaled) if t.expected_match), None)
    for target, g in zip(targets, scaled):
        own = (g / g.norm()).unsqueeze(0)
        comparison = bias_statistics(sample.gradients, g, torch.cat([own, problem.directions]))
        rows.append({
            "trainer": case.trainer,
            "config": dict(case.config),
            "planted": case.planted,
            "label": case.label,
            "vbon": None if case.vbon is None else asdict(case.vbon),
            "target": target.name,
            "objective": target.objective,
            "scale_rule": target.scale_rule,
            "scale": target.scale(problem.pair, setup.max_completion_length),
            "expected_match": target.expected_match,
            **comparison,
            "exact_relative_bias": None if derived is None else float((derived - g).norm() / g.norm()),
            "matches": comparison["bias_z"] <= Z_MATCH,
            "R": sample.gradients.shape[0],
            "groups_per_step": groups,
            "num_generations": num_generations,
            "sampling_law": law,
            "seconds": sample.seconds,
            "trl_version": trl.__version__,
            "torch_version": torch.__version__,
        })
    return rows, sample


# --------------------------------------------------------------------------- reporting


def verdict(rows: Sequence[dict]) -> str:
    """One sentence on one case's rows (all targets of one configuration).

    A target is "consistent" when bias_z <= 5 (no bias detectable at this R). Where
    the exact expectation of TRL's gradient is known and confirmed by its own row,
    the exact relative bias against every other target is given as well.
    """
    names = {"sequence_kl": "sequence-level", "token_kl": "per-token (prefix fixed)",
             "trl_expectation": "derived TRL expectation",
             "centred_sequence_kl": "sequence-level with TRL's (G-1)/G reward factor",
             "vbon": "exact vBoN", "vbon_estimated": "vBoN of the estimated CDF",
             "vbon_bound": "finite vBoN bound", "vbon_scaled": "exact vBoN over N-1"}
    derived = next((r for r in rows if r["expected_match"]), None)
    confirmed = derived is not None and derived["matches"]
    parts = []
    for row in rows:
        what = f"{names.get(row['target'], row['target'])} `{row['objective']}`"
        exact = row["exact_relative_bias"] if confirmed and row is not derived else None
        if row["matches"]:
            text = f"consistent with {what} (z = {row['bias_z']:.1f})"
            if exact is not None:
                text += f", though exactly biased by {100 * exact:.1f}%"
        else:
            size = f"{100 * exact:.1f}% exactly" if exact is not None else f"{100 * row['relative_bias']:.0f}%"
            text = f"biased for {what} by {size} (z = {row['bias_z']:.1f})"
        parts.append(text)
    if derived is not None and not derived["matches"]:
        parts.append("**the derived expectation failed: the derivation or the audit is wrong**")
    return "; ".join(parts) + "."


def markdown_report(results: dict) -> str:
    """docs/trl_audit.md: the setup, how to read it, and the verdict table, from the results JSON.

    One table row per configuration; its number columns show the configuration's
    first target (the objective it claims: ``sequence_kl``, or the vBoN objective of a
    vBoN case), the verdict covers every target the configuration was compared with.
    """
    meta, rows = results["meta"], results["rows"]
    exact, law = meta["exact"], meta["pooled_sampling_law"]
    G = meta["num_generations"]
    cfg = meta["config"]
    by_case: dict[str, list[dict]] = {}
    for row in rows:
        by_case.setdefault(row["label"], []).append(row)
    lines = [
        f"# TRL {meta['trl_version']}: its own gradients against exact ones",
        "",
        "Generated by `python benchmarks/trl_gradients.py --out docs/trl_gradients.json "
        "--markdown docs/trl_audit.md` (do not edit by hand).",
        "",
        f"**Setup.** TRL {meta['trl_version']}, transformers {meta['transformers_version']}, torch "
        f"{meta['torch_version']}, CPU, float64 models (TRL computes the log-probabilities of its loss in "
        f"float32 whatever the model dtype). A tiny GPT-2 reference (V = {cfg['vocab_size']} tokens incl. "
        f"EOS) and a perturbed policy, KL(π‖π_ref) = {exact['kl_policy_reference']:.3f}; completions of at "
        f"most L = {cfg['max_completion_length']} tokens, {exact['support_size']} of them "
        f"({100 * exact['truncated_mass']:.0f}% of the policy mass truncated at L), E|y| = "
        f"{exact['expected_length']:.3f}. Reward: {cfg['reward_value']:g} × (number of token `a`), values "
        f"{exact['reward_values']} (ties). Each configuration runs TRL's own `training_step` "
        f"R = {meta['repetitions']} times at fixed parameters (generation, reward, advantages, loss, "
        f"backward; no optimizer), each step {meta['groups']} groups of G = {G} completions, and the mean "
        f"of the R gradients read from `.grad` is compared with exact gradients by enumeration. Wall time "
        f"{meta['wall_seconds']:.0f} s ({meta['cpu_seconds']:.0f} s of CPU) on {meta['threads']} thread(s) of "
        f"a {meta['cpu_count']}-core machine shared with other jobs.",
        "",
        f"**Sampling law.** All {law['samples']} completions TRL generated, against the enumerated law "
        f"(temperature {cfg['temperature']:g}, no top-k/top-p, EOS, L): χ² = {law['chi2']:.1f} on "
        f"{law['dof']} degrees of freedom, p = {law['p_value']:.3g} (per configuration in the JSON).",
        "",
        "**Reading the table.** *relative bias* = ‖E ĝ_TRL − c g‖/‖c g‖ with g = ∇(−J) the exact gradient "
        "of the target and c > 0 the constant of TRL's loss normalisation (in brackets: the noise floor "
        "sqrt(tr Cov/R)/‖c g‖; a relative bias of a few noise floors or less is not significant). *z*: "
        "the largest |t| of E ĝ_TRL − c g along the target's own direction, the exact gradients of E[r], "
        "E[(r − E r)/|y|] and the three KL kinds, and "
        f"{cfg['random_directions']} random directions, Bonferroni-adjusted and written as a two-sided "
        "normal z; a target is *consistent* when z ≤ 5 (no bias detectable at this R, which is less than unbiased). "
        "Where TRL's exact expected gradient is known (`trl_expectation`, or RLOO's own objective) and its "
        "row confirms it, the verdict also gives the *exact* relative bias against every other target. "
        "*cosine* = cos(E ĝ_TRL, g), free of the scale c.",
        "",
        "**Targets.** `sequence_kl`: J = E[r] − β KL(π_θ‖π_ref) over whole completions (what the "
        "configuration claims to optimise). `token_kl`: J = E[r] − β Σ_t KL at each position with the "
        "prefix distribution held fixed (reverse KL(π_t‖ref_t) for bias-corrected k3 and RLOO, forward "
        "KL(ref_t‖π_t) for plain k3). `trl_expectation`: the exact expectation of TRL's gradient derived "
        f"from its code where it has a closed form: GRPO's group mean includes the sample's own reward, so "
        f"the reward part is scaled by (G−1)/G = {(G - 1) / G:g}; `grpo` divides each completion by its "
        "length. `centred_sequence_kl`: the same (G−1)/G reward factor with the sequence-level KL; it "
        "isolates the KL question. Loss normalisations, i.e. c: `dr_grpo` divides by G·L "
        "(c = 1/L, unbiased up to that scale); `dapo` and `bnpo` divide by the batch's token count, a "
        "random normaliser (compared at c = 1/E|y|; on one process with one accumulation step they are "
        "the same estimator); `grpo` divides each completion by |y| (a length-weighted objective; "
        "compared at c = E[1/|y|]); RLOO averages sequences (c = 1). At β = 0 TRL computes no KL term, "
        "so `use_bias_correction_kl` has no effect and only its default (True) is run. The planted rows "
        f"multiply RLOO's leave-one-out advantages by (G−1)/G, which equals centring on the group mean "
        f"including the sample's own reward: a bias of {100 / G:.0f}% of ‖g‖ that the audit must detect.",
        "",
        *_vbon_paragraphs(meta),
        "| trainer | config | target (claimed) | relative bias (noise) | z | cosine | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for group in by_case.values():
        main = group[0]
        config = ", ".join(f"{k}={v}" for k, v in main["config"].items())
        if main.get("vbon"):
            spec = VBoNSpec(**main["vbon"])
            config += f", **reward: {spec.name}**"
        if main["planted"]:
            config += " **(planted bias)**"
        cells = [main["trainer"].upper(), config, f"{main['objective']} (c: {main['scale_rule']})",
                 f"{100 * main['relative_bias']:.1f}% ({100 * main['relative_bias_se']:.1f}%)",
                 f"{main['bias_z']:.1f}", f"{main['cosine']:.4f}", verdict(group)]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _vbon_paragraphs(meta: dict) -> list[str]:
    """The markdown paragraphs on the vBoN rows and on runs merged into the results (may be none)."""
    lines = []
    vbon = meta.get("vbon") or {}
    if vbon:
        specs = list(vbon.values())
        ns = sorted({v["n"] for v in specs})
        estimated = [v for v in specs if v["reference_samples"] is not None]
        kls = "; ".join(f"N = {v['n']}: KL(π‖π_N) = {v['kl_policy_bon']:.3f}" for v in specs
                        if v["objective"] == "exact" and v["reference_samples"] is None)
        text = (
            f"**vBoN rows.** The base reward is the one above; TRL trains on "
            f"`bonmath.trl.VBoNReward(base, N, ...)`, N ∈ {ns}. Exact CDF (`exact_cdf`, the enumerated "
            f"reference law): R_N = log π_N − log π_ref, so RLOO at β = 1 should estimate −∇KL(π_θ‖π_N) "
            f"({kls}). "
        )
        for v in estimated:
            text += (
                f"Estimated CDF (N = {v['n']}): M = {v['reference_samples']} reference completions drawn "
                f"once (seeded) from the reference, rewards {v['reference_rewards']}; the reward R̂_N "
                f"describes π̂_N ∝ π_ref e^(R̂_N), KL(π‖π̂_N) = {v['kl_policy_estimated_bon']:.3f} against "
                f"KL(π‖π_N) = {v['kl_policy_bon']:.3f}: RLOO should estimate −∇KL(π_θ‖π̂_N), and its bias "
                "for −∇KL(π_θ‖π_N) is known exactly. "
            )
        text += (
            "Bound: reward log F̃ at β = 1/(N−1). Every completion has policy mass, the lowest reward "
            "level included, so the bound L = log N + (N−1) E[log F_lt] − KL is −∞; `VBoNReward` uses "
            "the exact R_N on that level (log F̃ = (R_N − log N)/(N−1)), which is the finite bound L̃ of "
            "`bonmath.vbon_finite_lower_bound`, and the target is ∇L̃/(N−1). GRPO `dr_grpo` at β = 1 with "
            "R_N is compared with −∇KL(π_θ‖π_N) and with its derived expectation (the (G−1)/G reward "
            "factor and the per-token KL). In these rows the test directions of *z* use the vBoN reward "
            "in place of r."
        )
        lines += [text, ""]
    for part in meta.get("merged_runs", []):
        law = part["pooled_sampling_law"]
        lines += [
            f"**Merged run.** The {len(part['labels'])} configurations of `--only {part['selection']}` were "
            f"run separately (`--only {part['selection']}`, same settings and seeds as in the full run) and "
            f"merged into these results (`--from-json PART --merge`, `bonmath.trl_audit.merge_results`): wall time {part['wall_seconds']:.0f} s "
            f"({part['cpu_seconds']:.0f} s of CPU); their {law['samples']} completions against the "
            f"enumerated law: χ² = {law['chi2']:.1f} on {law['dof']} degrees of freedom, p = {law['p_value']:.3g}.",
            "",
        ]
    return lines


MERGE_KEYS = ("repetitions", "groups", "num_generations", "max_completion_length", "vocab_size",
              "temperature", "reward_value", "noise", "random_directions", "seed", "threads")
"""The run settings two results must share to be merged (``meta["config"]``)."""


def merge_results(results: dict, part: dict) -> dict:
    """Merge the rows of a partial run (``--only``) into full results.

    Rows of ``results`` whose configuration (``label``) the partial run has are
    replaced by its rows, the others kept, in order, followed by the new ones. The
    meta data stays that of ``results``, plus the partial run's ``vbon`` summaries and
    an entry in ``merged_runs`` (its selection, labels, wall and CPU time, and the
    sampling-law test of its completions), replacing an earlier one of the same selection.

    Raises
    ------
    ValueError
        If the two runs differ in a setting of :data:`MERGE_KEYS`, or in the TRL,
        transformers or torch version.
    """
    meta, new = results["meta"], part["meta"]
    for key in MERGE_KEYS:
        if meta["config"].get(key) != new["config"].get(key):
            raise ValueError(f"cannot merge runs with different {key}: {meta['config'].get(key)!r} "
                             f"and {new['config'].get(key)!r}")
    for key in ("trl_version", "transformers_version", "torch_version"):
        if meta[key] != new[key]:
            raise ValueError(f"cannot merge runs with different {key}: {meta[key]!r} and {new[key]!r}")
    labels = {row["label"] for row in part["rows"]}
    selection = new["config"].get("only", "all")
    merged = copy.deepcopy(meta)
    merged["vbon"] = {**meta.get("vbon", {}), **new.get("vbon", {})}
    merged["merged_runs"] = [r for r in meta.get("merged_runs", []) if r["selection"] != selection] + [{
        "selection": selection,
        "labels": sorted(labels),
        "wall_seconds": new["wall_seconds"],
        "cpu_seconds": new["cpu_seconds"],
        "pooled_sampling_law": new["pooled_sampling_law"],
    }]
    rows = [row for row in results["rows"] if row["label"] not in labels] + list(part["rows"])
    return {"meta": merged, "rows": copy.deepcopy(rows)}
