"""vBoN on Hugging Face TRL: the vBoN training reward, and exact evaluation while training.

TRL's trainers maximise E_θ[r] - β KL(π_θ || π_ref) with any reward function. vBoN
(Amini et al., ICLR 2025) is that objective with a reward built from the base reward's
CDF under the reference model (docs/math.md, "vBoN"):

``objective="exact"``, β = 1
    reward R_N(y) = log π_N(y) - log π_ref(y), the exact BoN log ratio; the objective
    is J = E_θ[R_N] - KL(π_θ || π_ref) = -KL(π_θ || π_N).
``objective="bound"``, β = 1/(N-1)
    reward log F(r(y)); the objective is (L - log N)/(N-1) with the lower bound
    L = log N + (N-1) E_θ[log F] - KL(π_θ || π_ref) <= J. This is how the paper's
    released code trains (n = 1/β + 1).

:class:`VBoNReward` turns a TRL reward function into either reward, with F estimated
from M reference samples per prompt (or exact, for an enumerable task), and
:class:`ExactEvaluationCallback` enumerates the policy being trained on small prompts
and logs the exact E[r], KL(π || π_ref), KL(π || π_N), J, the bound and the win rate
into the trainer's logs.

Which TRL configuration estimates which gradient
-------------------------------------------------
Measured by the audit (``benchmarks/trl_gradients.py``, docs/trl_audit.md) on TRL 1.16,
against exact gradients on an enumerable task:

* ``RLOOTrainer`` with ``beta=1`` and ``VBoNReward(objective="exact")``: RLOO puts the
  sequence's summed k1 = log π_θ(y) - log π_ref(y) into the reward and multiplies the
  leave-one-out advantage by the sequence score function, so the gradient is an
  unbiased estimate of ∇J = -∇KL(π_θ || π̂_N), where π̂_N is the BoN law the reward
  describes (π_N itself with ``exact_cdf``; the law of the estimated CDF otherwise, see
  :class:`VBoNReward`). This needs ``num_generations >= 2``,
  ``normalize_advantages=False`` (the default), ``num_iterations=1`` and
  ``steps_per_generation`` equal to ``gradient_accumulation_steps`` (on-policy, so the
  clipped ratio is exactly 1 and never clips), no ``reward_clip_range``,
  ``mask_truncated_completions=False``, ``top_p=1``, ``top_k=0`` and no dropout
  (``disable_dropout=True`` or a model without dropout). The loss averages over
  sequences, which scales the gradient by a positive constant. Audit: unbiased for
  -∇KL(π_θ || π_N) with the exact CDF (z = 0.0 at N = 2 and 4) and for -∇KL(π_θ || π̂_N)
  with F̂ from M = 16 samples (z = 0.7, 0.9), which is 8.2 % / 11.7 % of ‖g‖ off
  -∇KL(π_θ || π_N).
* The same with ``beta=1/(N-1)`` and ``objective="bound"``: unbiased for ∇L̃/(N-1), the
  finite bound (:func:`bonmath.vbon_finite_lower_bound`; L itself is -inf for any
  softmax policy, which has mass on the lowest level), with the exact F (audit: z = 0.0);
  it is 4.0 % (N = 2) and 8.2 % (N = 4) of ‖g‖ off -∇KL(π_θ || π_N)/(N-1). With F̂ from M
  samples it is the gradient of the bound *with F̂*, whose bias is computable exactly
  (:func:`bonmath.log_cdf_estimate_bias`; it decays like 1/M).
* ``GRPOTrainer``: its KL is the per-token k3 estimator in the loss, whose gradient
  drops the future terms of the sequence gradient (biased for ∇KL), and its default
  ``scale_rewards`` divides by the group's standard deviation, which changes the
  objective. With ``beta=0`` and ``scale_rewards="none"`` the reward part is unbiased,
  but then the KL to π_ref is missing from J. Not an unbiased estimate of ∇J. See the
  audit.

The reference model of vBoN is the one TRL uses: ``trainer.ref_model`` at the
trainer's ``temperature`` (TRL divides both models' logits by it).

This module imports TRL; ``import bonmath`` does not (extra ``trl``).

(Over 400 lines on purpose: VBoNReward and ExactEvaluationCallback share TRL's calling
conventions, the prompt grouping and the per-prompt caches.)
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import torch
    import transformers
    import trl  # noqa: F401  (the extra this module needs)
    from transformers import TrainerCallback
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "bonmath.trl needs TRL, transformers and torch: install the `trl` extra, "
        "pip install 'bonmath[trl]'"
    ) from err

from bonmath.backend import NEG_INF, expectation, is_torch, to_numpy
from bonmath.bon import bon_log_probs, bon_log_ratio_from_cdf
from bonmath.cdf_estimation import estimate_log_cdf
from bonmath.divergences import kl_divergence, win_rate
from bonmath.enumeration import PAD, Enumeration, check_aligned, string_keys, string_positions
from bonmath.hf import CausalLMPolicy, enumerate_pair
from bonmath.levels import reward_levels
from bonmath.objectives import vbon_finite_lower_bound
from bonmath.validation import (
    check_choice,
    check_count,
    check_n,
    check_positive,
    prepare,
    reward_arrays,
)

__all__ = [
    "DEFAULT_EVAL_EVERY", "METRICS", "OBJECTIVES", "ExactEvaluationCallback", "VBoNReward", "exact_metrics",
    "position_ids_from_attention_mask",
]

OBJECTIVES = ("exact", "bound")
"""``exact``: R_N (use β = 1); ``bound``: log F (use β = 1/(N-1))."""

DEFAULT_EVAL_EVERY = 100
"""Steps between two exact evaluations of :class:`ExactEvaluationCallback`."""

_TRL_ONLY_KWARGS = ("trainer_state", "log_extra", "log_metric")
"""Keyword arguments TRL adds to a reward call that are not dataset columns."""

RewardFunction = Callable[..., Sequence[float | None]]


def _prompt_seed(seed: int, prompt: str) -> int:
    """A seed for ``prompt`` that every process computes alike (no Python hash randomisation)."""
    digest = hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _single_eos(tokenizer: Any, model: Any) -> int:
    """The one EOS id that ends a completion for TRL (tokenizer's and model's), or ValueError."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer must define eos_token_id")
    declared = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = {int(eos)} | set([declared] if isinstance(declared, int) else list(declared or []))
    if len(ids) != 1:
        raise ValueError(
            f"the tokenizer and the model declare several EOS ids {sorted(ids)}; an enumerable "
            "policy needs exactly one"
        )
    return int(eos)


def _load_model(model: Any) -> torch.nn.Module:
    """A causal LM instance from an instance or a local path (eval mode, float64)."""
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(model, local_files_only=True).double().eval()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"reference_model must be a model or a local path; got {type(model).__name__}")
    return model


class _UnknownPrompt(KeyError, ValueError):
    """A prompt without reference data (a ``KeyError``, and a ``ValueError`` as every refusal)."""


def _as_rewards(values: Any, prompts: Sequence[str], what: str) -> np.ndarray:
    """Rewards returned by a reward function as float64, refusing None and NaN by prompt."""
    values = list(values)
    if len(values) != len(prompts):
        raise ValueError(f"{what} returned {len(values)} rewards for {len(prompts)} completions")
    for i, (value, prompt) in enumerate(zip(values, prompts)):
        if value is None:
            raise ValueError(f"{what} returned None for completion {i} of prompt {prompt!r}")
    out = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(np.isnan(out))
    if bad.size:
        raise ValueError(f"{what} returned NaN for completion {bad[0]} of prompt {prompts[bad[0]]!r}")
    return out


def _check_reference_rewards(values: Any, prompt: str) -> np.ndarray:
    rewards = np.asarray(values, dtype=np.float64)
    if rewards.ndim != 1 or rewards.size < 1:
        raise ValueError(
            f"the reference rewards of prompt {prompt!r} must be a 1-D sequence of M >= 1 rewards; "
            f"got shape {rewards.shape}"
        )
    if np.isnan(rewards).any():
        raise ValueError(f"the reference rewards of prompt {prompt!r} contain NaN")
    return np.sort(rewards)


@dataclass(frozen=True)
class _ExactLevels:
    """The exact reward levels of one prompt: sorted distinct rewards, log F_lt, log q."""

    values: np.ndarray
    log_cdf_lt: np.ndarray
    log_mass: np.ndarray


def _exact_levels(prompt: str, support: Any) -> _ExactLevels:
    try:
        rewards, ref_log_probs = support
    except (TypeError, ValueError):
        raise ValueError(
            f"exact_cdf[{prompt!r}] must be a pair (rewards of the support, ref log-probs)"
        ) from None
    _, (ref_log_probs, rewards) = prepare(
        {"ref_log_probs": np.asarray(ref_log_probs, dtype=np.float64)}, {"rewards": np.asarray(rewards, dtype=np.float64)}
    )
    if ref_log_probs.ndim != 1:
        raise ValueError(f"exact_cdf[{prompt!r}] must hold 1-D arrays; got shape {ref_log_probs.shape}")
    levels = reward_levels(ref_log_probs, rewards, np)
    return _ExactLevels(np.unique(rewards), levels.log_cdf_lt, levels.log_mass)


class VBoNReward:
    """A TRL reward function that turns a base reward into the vBoN training reward.

    Parameters
    ----------
    reward_fn : callable
        The base reward, a TRL reward function: called as
        ``reward_fn(prompts=..., completions=..., completion_ids=..., **columns)`` and
        returning one float per completion.
    n : float
        N of Best-of-N (n > 0 for ``exact``, n > 1 for ``bound``).
    objective : {"exact", "bound"}, default "exact"
        ``exact``: R_N = log π_N - log π_ref from (F̂_lt, q̂), train with β = 1.
        ``bound``: log F̂_lt, train with β = 1/(N-1).
    reference_rewards : mapping of str to sequence of float, optional
        Prompt text → the base rewards of M >= 1 reference completions of it.
    reference_column : str, optional
        Name of a dataset column holding each row's M reference rewards.
    reference_model : model or local path, optional
        Draw ``num_ref_samples`` completions per prompt from it (with
        ``tokenizer``, ``max_new_tokens``, ``temperature``) the first time the prompt
        is seen, score them with ``reward_fn`` and cache the rewards. Cost: M
        completions generated and scored once per distinct prompt *per process*
        (the draws are seeded by ``seed`` and the prompt text, so every process
        draws the same ones), and M floats of memory per prompt.
    exact_cdf : mapping of str to (rewards, ref_log_probs), optional
        Prompt text → the base reward and log π_ref of every string of an enumerable
        support; the exact F_lt and q replace the estimates.
    tokenizer, num_ref_samples, max_new_tokens, temperature, seed
        For ``reference_model`` only: use the trainer's processing class,
        ``max_completion_length`` and ``temperature`` so that the reference samples
        come from the law TRL samples from (``top_p=1``, ``top_k=0``).
    name : str, optional
        ``__name__`` (TRL logs ``rewards/<name>/mean``); default ``vbon_<objective>_n<N>``.

    Notes
    -----
    The estimated CDF. The released code's F̂_lt(r) = (1 + #{m: r_m < r})/(M + 1)
    is exactly the F_lt of the law Ĝ = (δ_{-∞} + Σ_m δ_{r_m})/(M + 1): the M
    reference rewards plus one pseudo-sample below every reward. The level mass
    consistent with it is Ĝ's atom, q̂(r) = #{m: r_m = r}/(M + 1), so that
    F̂_le = F̂_lt + q̂ = (1 + #{r_m <= r})/(M + 1) <= 1. (Add-one smoothing the mass
    as well would count the pseudo-sample twice and push F̂_le above 1 at the top
    level.) With this choice R̂_N = log[(F̂_le^N - F̂_lt^N)/q̂]
    (:func:`bonmath.bon_log_ratio_from_cdf`) is the log ratio of BoN of Ĝ to Ĝ,
    and BoN of Ĝ is a proper law: its level masses F̂_le^N - F̂_lt^N telescope to 1,
    (M + 1)^-N of it on the pseudo-sample. A completion whose reward no reference
    sample has gets q̂ = 0 and the infinitesimal-atom limit
    R̂_N = log N + (N-1) log F̂_lt, which is the bound's value: with continuous
    rewards the two objectives coincide, as they do in the continuous limit of
    the exact law. Both F̂ and q̂ are consistent as M → ∞. The training reward
    defines π̂_N = π_ref e^{R̂_N}/Z, and E_θ[R̂_N] - KL(π_θ || π_ref) =
    -KL(π_θ || π̂_N) + log Z, so RLOO's gradient estimates -∇KL(π_θ || π̂_N).

    With ``exact_cdf`` the lowest level has F_lt = 0; ``bound`` then returns the
    value v with log N + (N-1) v = R_N there (finite; as in
    :meth:`bonmath.task.Task.bound_log_cdf`), so the reward is never -inf.

    TRL stores rewards as float32 (relative rounding 6e-8). ``None`` and NaN base
    rewards are refused (``ValueError`` naming the prompt), as are prompts without
    reference rewards (``KeyError`` naming the prompt).

    Examples
    --------
    >>> def reward_len(prompts, completions, completion_ids, **kwargs):
    ...     return [float(len(c)) for c in completions]
    >>> vbon = VBoNReward(reward_len, n=4, reference_rewards={"p": [1.0, 2.0, 2.0, 5.0]})
    >>> rewards = vbon(prompts=["p", "p"], completions=["ab", "abc"], completion_ids=[[1], [2]])
    >>> [round(v, 6) for v in rewards]  # log((0.8^4 - 0.4^4)/0.4), log(4 * 0.8^3): no sample has r = 3
    [-0.040822, 0.716864]
    >>> vbon.__name__
    'vbon_exact_n4'
    """

    def __init__(
        self,
        reward_fn: RewardFunction,
        n: float,
        *,
        objective: str = "exact",
        reference_rewards: Mapping[str, Sequence[float]] | None = None,
        reference_column: str | None = None,
        reference_model: Any = None,
        exact_cdf: Mapping[str, tuple[Any, Any]] | None = None,
        tokenizer: Any = None,
        num_ref_samples: int | None = None,
        max_new_tokens: int | None = None,
        temperature: float = 1.0,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        if not callable(reward_fn):
            raise TypeError(f"reward_fn must be callable; got {type(reward_fn).__name__}")
        for key, mapping in (("reference_rewards", reference_rewards), ("exact_cdf", exact_cdf)):
            if mapping is not None and not isinstance(mapping, Mapping):
                raise TypeError(f"{key} must be a mapping of prompt -> values; got {mapping!r}")
        if tokenizer is not None and not hasattr(tokenizer, "decode"):
            raise TypeError(f"tokenizer must be None or a tokenizer (with decode); got {tokenizer!r}")
        for key, count in (("num_ref_samples", num_ref_samples), ("max_new_tokens", max_new_tokens)):
            if count is not None:
                check_count(count, key)
        temperature = check_positive(temperature, "temperature")
        seed = check_count(seed, "seed", minimum=0)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be None or a string; got {name!r}")
        self.reward_fn = reward_fn
        self.objective = check_choice(objective, "objective", OBJECTIVES)
        self.n = check_n(n)
        if objective == "bound" and self.n <= 1:
            raise ValueError(f"n must be > 1 for the bound (β = 1/(N-1)); got {self.n:g}")
        sources = {
            "reference_rewards": reference_rewards,
            "reference_column": reference_column,
            "reference_model": reference_model,
            "exact_cdf": exact_cdf,
        }
        given = [key for key, value in sources.items() if value is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one source of the reference CDF (reference_rewards, reference_column, "
                f"reference_model or exact_cdf); got {given or 'none'}"
            )
        self.source = given[0]
        self._empirical: dict[str, np.ndarray] = {}
        self._exact: dict[str, _ExactLevels] = {}
        if reference_rewards is not None:
            self._empirical = {str(p): _check_reference_rewards(r, p) for p, r in reference_rewards.items()}
        if exact_cdf is not None:
            self._exact = {str(p): _exact_levels(p, s) for p, s in exact_cdf.items()}
        if reference_column is not None and not isinstance(reference_column, str):
            raise TypeError(f"reference_column must be a column name; got {reference_column!r}")
        self.reference_column = reference_column
        self._sampler = None
        if reference_model is not None:
            if tokenizer is None or max_new_tokens is None or num_ref_samples is None:
                raise ValueError(
                    "reference_model needs tokenizer, max_new_tokens and num_ref_samples"
                )
            model = _load_model(reference_model)
            if model.training:
                raise ValueError("reference_model must be in eval mode (dropout makes it random)")
            self._sampler = dict(
                model=model,
                tokenizer=tokenizer,
                m=check_count(num_ref_samples, "num_ref_samples"),
                max_new_tokens=check_count(max_new_tokens, "max_new_tokens"),
                temperature=check_positive(temperature, "temperature"),
                eos=_single_eos(tokenizer, model),
                seed=check_count(seed, "seed", minimum=0),
            )
        self.__name__ = name if name is not None else f"vbon_{objective}_n{self.n:g}"
        self.timing = {"calls": 0, "seconds": 0.0, "base_reward_seconds": 0.0, "reference_seconds": 0.0}

    def __repr__(self) -> str:
        return f"VBoNReward({self.__name__}, n={self.n:g}, objective={self.objective!r}, source={self.source})"

    # ------------------------------------------------------------- reference CDF

    def _sample_reference(self, prompt: str, columns: dict[str, Any]) -> np.ndarray:
        """Draw M reference completions of ``prompt``, score them, return their sorted rewards."""
        s = self._sampler
        if s is None:
            raise RuntimeError("reference samples are drawn only with reference_model=")
        started = time.perf_counter()
        prompt_ids = s["tokenizer"](text=prompt)["input_ids"]  # as TRL tokenizes prompts
        policy = CausalLMPolicy(s["model"], prompt_ids, s["max_new_tokens"], s["eos"],
                                temperature=s["temperature"])
        generator = torch.Generator(device=policy.device).manual_seed(_prompt_seed(s["seed"], prompt))
        completion_ids = [list(c) for c in policy.sample(s["m"], generator=generator)]
        completions = s["tokenizer"].batch_decode(completion_ids, skip_special_tokens=True)
        rewards = self.reward_fn(
            prompts=[prompt] * s["m"], completions=completions, completion_ids=completion_ids,
            **{key: [value] * s["m"] for key, value in columns.items()},
        )
        values = _as_rewards(rewards, [prompt] * s["m"], "reward_fn (on reference samples)")
        self.timing["reference_seconds"] += time.perf_counter() - started
        return np.sort(values)

    def reference(self, prompt: str, columns: Mapping[str, Any] | None = None) -> np.ndarray | _ExactLevels:
        """The reference data of ``prompt``: sorted reference rewards, or its exact levels.

        ``columns`` are the prompt's dataset columns (a reference column is read from
        them; the reference sampler passes them on to ``reward_fn``).
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string; got {prompt!r}")
        if columns is not None and not isinstance(columns, Mapping):
            raise TypeError(f"columns must be None or a mapping of column name -> value; got {columns!r}")
        columns = dict(columns or {})
        if self.source == "exact_cdf":
            if prompt not in self._exact:
                raise _UnknownPrompt(f"exact_cdf has no entry for prompt {prompt!r}")
            return self._exact[prompt]
        if self.source == "reference_column":
            if self.reference_column not in columns:
                raise KeyError(
                    f"no dataset column {self.reference_column!r} for prompt {prompt!r}; columns: "
                    f"{sorted(columns)}"
                )
            return _check_reference_rewards(columns[self.reference_column], prompt)
        if prompt not in self._empirical:
            if self.source == "reference_rewards":
                raise _UnknownPrompt(f"reference_rewards has no entry for prompt {prompt!r}")
            self._empirical[prompt] = self._sample_reference(prompt, columns)
        return self._empirical[prompt]

    # ---------------------------------------------------------------- the reward

    def training_rewards(self, prompt: str, rewards: Any, columns: Mapping[str, Any] | None = None) -> np.ndarray:
        """The vBoN reward of base rewards ``rewards`` (shape (k,)) of completions of ``prompt``."""
        (rewards,) = reward_arrays({"rewards": to_numpy(rewards)}, np, as_numbers=True)  # compared with stored rewards
        rewards = rewards.reshape(-1)
        if np.isnan(rewards).any():
            raise ValueError(f"rewards of prompt {prompt!r} contain NaN")
        ref = self.reference(prompt, columns)
        if isinstance(ref, _ExactLevels):
            level = np.minimum(np.searchsorted(ref.values, rewards), ref.values.size - 1)
            unknown = ref.values[level] != rewards
            if unknown.any():
                raise ValueError(
                    f"reward {rewards[unknown][0]!r} of a completion of prompt {prompt!r} is not the "
                    "reward of any string of the support given in exact_cdf"
                )
            log_cdf_lt, log_mass = ref.log_cdf_lt[level], ref.log_mass[level]
        else:
            log_cdf_lt = estimate_log_cdf(ref, rewards, "add_one")
            tied = np.searchsorted(ref, rewards, side="right") - np.searchsorted(ref, rewards, side="left")
            with np.errstate(divide="ignore"):
                log_mass = np.log(tied.astype(np.float64)) - math.log(ref.size + 1)
        if self.objective == "exact":
            return bon_log_ratio_from_cdf(log_cdf_lt, log_mass, self.n)
        lowest = log_cdf_lt == NEG_INF  # only with exact_cdf: add-one never gives F = 0
        if lowest.any():
            log_ratio = bon_log_ratio_from_cdf(log_cdf_lt, log_mass, self.n)
            log_cdf_lt = np.where(lowest, (log_ratio - math.log(self.n)) / (self.n - 1.0), log_cdf_lt)
        return log_cdf_lt

    def __call__(
        self,
        prompts: Sequence[str],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]],
        **kwargs: Any,
    ) -> list[float]:
        """The vBoN rewards of a batch, as TRL calls reward functions (one float per completion)."""
        started = time.perf_counter()
        for key, value in (("prompts", prompts), ("completions", completions), ("completion_ids", completion_ids)):
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise TypeError(f"{key} must be a sequence with one entry per completion; got {value!r}")
        prompts = list(prompts)
        if len(completions) != len(prompts) or len(completion_ids) != len(prompts):
            raise ValueError(
                f"prompts, completions and completion_ids must have one entry per completion; got "
                f"{len(prompts)}, {len(completions)} and {len(completion_ids)}"
            )
        for prompt in prompts:
            if not isinstance(prompt, str):
                raise TypeError(f"VBoNReward needs text prompts (str); got {type(prompt).__name__}")
        base_started = time.perf_counter()
        base = _as_rewards(
            self.reward_fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs),
            prompts, "reward_fn",
        )
        self.timing["base_reward_seconds"] += time.perf_counter() - base_started
        columns = {key: value for key, value in kwargs.items() if key not in _TRL_ONLY_KWARGS}
        out = np.empty_like(base)
        groups: dict[str, list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(prompt, []).append(i)
        for prompt, rows in groups.items():
            row_columns = {key: value[rows[0]] for key, value in columns.items()}
            if self.source == "reference_column" and self.reference_column is not None:
                column = columns.get(self.reference_column)
                if column is not None and any(
                    not np.array_equal(np.asarray(column[i], dtype=np.float64),
                                       np.asarray(column[rows[0]], dtype=np.float64)) for i in rows[1:]
                ):
                    raise ValueError(f"rows of prompt {prompt!r} disagree on {self.reference_column!r}")
            out[rows] = self.training_rewards(prompt, base[rows], row_columns)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric(f"{self.__name__}/base_reward", float(base.mean()))
        self.timing["calls"] += 1
        self.timing["seconds"] += time.perf_counter() - started
        return out.tolist()


# ------------------------------------------------------------------ exact evaluation


METRICS = ("reward", "kl_ref", "kl_bon", "J", "bound", "win_rate")
"""What :class:`ExactEvaluationCallback` logs, as ``exact/<name>``."""


def exact_metrics(policy_log_probs: Any, ref_log_probs: Any, rewards: Any, n: float) -> dict[str, float]:
    """Exact E[r], KL(π||π_ref), KL(π||π_N), J, the bound L̃ and W(π, π_ref) on one support.

    Parameters
    ----------
    policy_log_probs, ref_log_probs : arrays of shape (k,)
        log π and log π_ref on the same enumerated support.
    rewards : array of shape (k,)
    n : float
        N >= 1.

    Returns
    -------
    dict of float
        Keys :data:`METRICS`. ``bound`` is the finite bound L̃ <= J
        (:func:`bonmath.vbon_finite_lower_bound`).

    Examples
    --------
    >>> import numpy as np
    >>> m = exact_metrics(np.log([0.25, 0.75]), np.log([0.5, 0.5]), [0.0, 1.0], n=2)
    >>> m["kl_bon"], m["J"], round(m["win_rate"], 6)
    (0.0, -0.0, 0.625)
    """
    n = check_n(n)
    if n < 1:
        raise ValueError(f"n must be >= 1 for the bound; got {n:g}")
    _, (policy_log_probs, ref_log_probs, rewards) = prepare(  # in float64 numpy, tensors too
        {"policy_log_probs": to_numpy(policy_log_probs), "ref_log_probs": to_numpy(ref_log_probs)},
        {"rewards": to_numpy(rewards)}, finite_rewards=True)
    if policy_log_probs.ndim != 1:
        raise ValueError(f"policy_log_probs, ref_log_probs and rewards must be one support (k,); "
                         f"got shape {tuple(policy_log_probs.shape)}")
    kl_ref = float(kl_divergence(policy_log_probs, ref_log_probs))
    kl_bon = float(kl_divergence(policy_log_probs, bon_log_probs(ref_log_probs, rewards, n)))
    return {
        "reward": float(expectation(policy_log_probs, rewards, np)),
        "kl_ref": kl_ref,
        "kl_bon": kl_bon,
        "J": -kl_bon,
        "bound": float(vbon_finite_lower_bound(policy_log_probs, ref_log_probs, rewards, n)),
        "win_rate": float(win_rate(policy_log_probs, ref_log_probs, rewards)),
    }


def position_ids_from_attention_mask(model: torch.nn.Module) -> torch.utils.hooks.RemovableHandle:
    """Make ``model`` number positions from each row's first attended token when a call
    gives ``attention_mask`` but no ``position_ids``, as ``generate`` does.

    TRL's trainers score completions with ``model(input_ids=..., attention_mask=...)`` on
    left-padded prompts and no ``position_ids``; a model with absolute position
    embeddings (GPT-2) then numbers positions from the padding, so the loss's
    log-probabilities are not those of the law ``generate`` sampled from (docs/trl.md,
    "Prompts of different lengths"). This forward pre-hook fills in
    ``position_ids = cumsum(attention_mask) - 1`` (0 on padding; the last columns when a
    KV cache holds the earlier ones) and leaves any call that passes ``position_ids``
    unchanged. Rows without padding get 0, 1, 2, ..., what the model uses anyway.

    Parameters
    ----------
    model : torch.nn.Module
        A causal LM called with keyword arguments (``trainer.model``, and
        ``trainer.ref_model`` when TRL's ``beta`` is not 0).

    Returns
    -------
    torch.utils.hooks.RemovableHandle
        ``handle.remove()`` takes the hook off.

    Examples
    --------
    Tokens 1, 2, 3 after one pad token, against the same tokens unpadded:

    >>> from bonmath.zoo import tiny_task
    >>> model = tiny_task().model
    >>> alone = model(torch.tensor([[1, 2, 3]])).logits
    >>> padded = dict(input_ids=torch.tensor([[0, 1, 2, 3]]), attention_mask=torch.tensor([[0, 1, 1, 1]]))
    >>> torch.equal(model(**padded).logits[:, 1:], alone)  # positions counted from the padding
    False
    >>> handle = position_ids_from_attention_mask(model)
    >>> torch.allclose(model(**padded).logits[:, 1:], alone, rtol=0, atol=1e-12)
    True
    >>> handle.remove()
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")

    def fill_position_ids(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        mask = kwargs.get("attention_mask")
        if kwargs.get("position_ids") is not None or mask is None or mask.dim() != 2:
            return args, kwargs
        tokens = kwargs.get("input_ids", args[0] if args else None)
        if tokens is None:
            tokens = kwargs["inputs_embeds"]
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return args, {**kwargs, "position_ids": positions[:, -tokens.shape[1]:]}

    return model.register_forward_pre_hook(fill_position_ids, with_kwargs=True)


def _padded_strings(keys: list[tuple[int, ...]]) -> np.ndarray:
    """Strings (tuples of token ids) as an int64 array of shape (S, T) padded with ``PAD``."""
    out = np.full((len(keys), max(map(len, keys), default=0)), PAD, dtype=np.int64)
    for i, key in enumerate(keys):
        out[i, : len(key)] = key
    return out


def _check_exact_rewards(
    exact_rewards: Mapping[str, tuple[Any, Any]] | None, prompts: Sequence[str]
) -> dict[str, tuple[dict[tuple[int, ...], int], np.ndarray]]:
    """``exact_rewards`` checked, as prompt -> ({continuation: position}, rewards)."""
    if exact_rewards is None:
        return {}
    if not isinstance(exact_rewards, Mapping):
        raise TypeError(f"exact_rewards must be a mapping of prompt -> (continuations, rewards); got {exact_rewards!r}")
    out = {}
    for prompt, entry in exact_rewards.items():
        if prompt not in prompts:
            raise ValueError(f"exact_rewards has an entry for {prompt!r}, which is not one of the prompts")
        try:
            strings, values = entry
        except (TypeError, ValueError):
            raise ValueError(f"exact_rewards[{prompt!r}] must be a pair (continuations, rewards)") from None
        positions = string_positions(strings, f"exact_rewards[{prompt!r}] continuations")
        try:
            rewards = np.asarray(to_numpy(values) if is_torch(values) else values, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"exact_rewards[{prompt!r}] rewards must be real numbers; got {values!r}") from None
        if rewards.shape != (len(positions),):
            raise ValueError(f"exact_rewards[{prompt!r}] has {len(positions)} continuations and rewards of shape "
                             f"{rewards.shape}; need one reward per continuation")
        if not np.isfinite(rewards).all():
            raise ValueError(f"exact_rewards[{prompt!r}] rewards must be finite (no NaN or inf)")
        out[prompt] = (positions, rewards)
    return out


def _aligned_rewards(
    prompt: str, keys: list[tuple[int, ...]], positions: dict[tuple[int, ...], int], rewards: np.ndarray
) -> np.ndarray:
    """The precomputed ``rewards`` of the enumerated strings ``keys``, in their order."""
    index = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        position = positions.get(key)
        if position is None:
            raise ValueError(f"exact_rewards[{prompt!r}] has no reward for the continuation {list(key)}")
        index[i] = position
    return rewards[index]


class ExactEvaluationCallback(TrainerCallback):
    """Log the exact vBoN metrics of the policy being trained, by enumeration.

    Parameters
    ----------
    trainer : trl.RLOOTrainer or trl.GRPOTrainer
        The trainer (add the callback with ``trainer.add_callback(...)``). Its model,
        processing class, ``max_completion_length``, ``temperature``, ``top_k`` and
        EOS define the enumerated policy, so it is exactly the law TRL samples from.
    prompts : sequence of str
        Prompt texts whose continuations can be enumerated (V^L strings each).
    reward_fn : callable or None
        The *base* reward as a TRL reward function, called once per prompt on its
        whole support with ``prompts``, ``completions`` and ``completion_ids``
        (cached: the support does not change). ``None`` only when ``exact_rewards``
        has every prompt.
    n : float
        N >= 1 of the vBoN objective.
    eval_every : int, default :data:`DEFAULT_EVAL_EVERY`
        Evaluate at train begin, every ``eval_every`` optimizer steps and at the end.
    reference_model : model or local path, optional
        π_ref; default ``trainer.ref_model`` (built by TRL when β != 0).
    max_support : int, default 1_000_000
        Most continuations per prompt (:class:`bonmath.hf.CausalLMPolicy`).
    exact_rewards : mapping of str to (continuations, rewards), optional
        Prompt text → its base rewards precomputed (e.g. read from a disk cache,
        :func:`bonmath.sentiment.continuation_rewards`): ``continuations`` are token-id
        sequences or rows padded with ``PAD`` (an enumeration's ``sequences``), in any
        order, and ``rewards`` their finite rewards, shape (S,). Every enumerated
        continuation must be among them (checked at the first evaluation; others are
        ignored, so with top-k pass all V^L); ``reward_fn`` is then never called for
        that prompt.

    Attributes
    ----------
    history : list of dict
        ``{"step": s, "exact/reward": ..., ...}`` for each evaluation.
    seconds : float
        Time spent evaluating, ``reward_seconds`` of it in ``reward_fn`` (scoring each
        prompt's support, once: V^L strings per prompt; 0 for the prompts of
        ``exact_rewards``).

    Notes
    -----
    For each prompt the policy and the reference are enumerated with
    :class:`bonmath.hf.CausalLMPolicy` on one support and :func:`exact_metrics` is
    averaged over the prompts; the means are logged as ``exact/<metric>`` through
    ``transformers.Trainer.log`` (so they reach ``trainer.state.log_history``, the
    console and every ``report_to`` integration) on the main process only; the other
    processes wait at the next collective.

    Cost per evaluation: one enumeration of the policy per prompt (a walk of the
    prefix tree, one forward per open prefix); the reference's enumeration and the
    support's rewards are computed once per prompt and reused (without top-k every
    softmax policy has the same support, all the continuations, and π_ref does not
    change unless ``sync_ref_model``).

    It does not change the training: no random numbers are drawn (enumeration is
    deterministic), everything runs under ``torch.no_grad()`` with every module's
    train/eval mode restored afterwards, and no parameter or buffer is written.
    The test ``test_exact_evaluation_does_not_change_training`` checks bit-identical
    parameters with and without it. DeepSpeed ZeRO-3 and FSDP shard the parameters
    and are not supported (ZeRO-1/2 and DDP are).

    Examples
    --------
    Two RLOO steps on the review LM's first prompt with one-token completions (23
    continuations), the vBoN reward (N = 4) from 8 reference samples and TRL's log
    printing removed; the callback evaluates at the start and after every step:

    >>> import tempfile, trl
    >>> from datasets import Dataset
    >>> from transformers import PrinterCallback
    >>> from bonmath.sentiment import REVIEW_LM_PATH, load_review_lm
    >>> from bonmath.trl_sentiment import SentimentReward
    >>> _, tokenizer, prompts = load_review_lm()
    >>> vader = SentimentReward(tokenizer)
    >>> vbon = VBoNReward(vader, 4, reference_model=REVIEW_LM_PATH, tokenizer=tokenizer, num_ref_samples=8,
    ...                   max_new_tokens=1)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     args = trl.RLOOConfig(output_dir=tmp, use_cpu=True, seed=0, max_steps=2, learning_rate=3e-3,
    ...                           per_device_train_batch_size=4, num_generations=4, max_completion_length=1,
    ...                           beta=1.0, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True)
    ...     trainer = trl.RLOOTrainer(model=str(REVIEW_LM_PATH), reward_funcs=vbon, args=args,
    ...                               train_dataset=Dataset.from_dict({"prompt": prompts[:1] * 4}),
    ...                               processing_class=tokenizer)
    ...     trainer.remove_callback(PrinterCallback)
    ...     callback = ExactEvaluationCallback(trainer, prompts[:1], vader, 4, eval_every=1)
    ...     trainer.add_callback(callback)
    ...     _ = trainer.train()
    >>> [entry["step"] for entry in callback.history]
    [0, 1, 2]
    >>> start, end = callback.history[0], callback.history[-1]
    >>> start["exact/kl_ref"], round(start["exact/win_rate"], 12)  # at the start the policy is π_ref
    (0.0, 0.5)
    >>> end["exact/kl_bon"] < start["exact/kl_bon"], end["exact/J"] == -end["exact/kl_bon"]
    (True, True)
    >>> [entry["step"] for entry in trainer.state.log_history if "exact/kl_bon" in entry]  # logged through TRL
    [0, 1, 2]
    """

    def __init__(
        self,
        trainer: Any,
        prompts: Sequence[str],
        reward_fn: RewardFunction | None,
        n: float,
        *,
        eval_every: int = DEFAULT_EVAL_EVERY,
        reference_model: Any = None,
        max_support: int = 1_000_000,
        exact_rewards: Mapping[str, tuple[Any, Any]] | None = None,
    ) -> None:
        self.trainer = trainer
        self.n = check_n(n)
        if self.n < 1:
            raise ValueError(f"n must be >= 1; got {self.n:g}")
        self.eval_every = check_count(eval_every, "eval_every")
        prompts = [p for p in prompts]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a non-empty sequence of prompt texts")
        self.prompts = prompts
        self._exact_rewards = _check_exact_rewards(exact_rewards, prompts)
        if reward_fn is None:
            missing = [p for p in prompts if p not in self._exact_rewards]
            if missing:
                raise ValueError(f"reward_fn is None and exact_rewards has no entry for prompt {missing[0]!r}")
        elif not callable(reward_fn):
            raise TypeError(f"reward_fn must be callable or None; got {type(reward_fn).__name__}")
        self.reward_fn = reward_fn
        args = trainer.args
        for setting, neutral in (("top_p", 1.0), ("min_p", None), ("repetition_penalty", 1.0),
                                 ("generation_kwargs", None)):
            if getattr(args, setting, neutral) != neutral:
                raise ValueError(
                    f"trainer.args.{setting} = {getattr(args, setting)!r}: the enumerated policy supports "
                    f"only {setting} = {neutral!r}"
                )
        self.tokenizer = trainer.processing_class
        self.max_new_tokens = check_count(args.max_completion_length, "max_completion_length")
        self.temperature = check_positive(args.temperature, "temperature")
        self.top_k = args.top_k or None
        eos_ids = list(getattr(trainer, "eos_token_ids", [self.tokenizer.eos_token_id]))
        if len(eos_ids) != 1:
            raise ValueError(f"the trainer ends completions at several EOS ids {eos_ids}; need one")
        self.eos = int(eos_ids[0])
        if reference_model is not None:
            self.reference_model = _load_model(reference_model)
        elif getattr(trainer, "ref_model", None) is not None:
            self.reference_model = trainer.accelerator.unwrap_model(trainer.ref_model)
        else:
            raise ValueError("the trainer has no ref_model (beta = 0): pass reference_model")
        self.max_support = max_support
        self._reference_enumerations: dict[str, Enumeration] = {}
        self.prompt_ids = [self.tokenizer(text=p)["input_ids"] for p in prompts]  # as TRL tokenizes
        self.history: list[dict[str, float]] = []
        self.seconds = 0.0
        self.reward_seconds = 0.0
        self._rewards: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # prompt -> (strings padded with PAD, rewards)
        self._last_step: int | None = None

    def support_rewards(self, prompt: str, sequences: Any) -> np.ndarray:
        """The base reward of every continuation of ``prompt``, shape (S,) (cached per prompt).

        ``sequences``: tuples of token ids, or rows padded with ``PAD`` (an enumeration's).
        The rewards come from ``exact_rewards`` when it has the prompt (in the order of
        ``sequences``), else from ``reward_fn``. A call with the strings of the previous
        call returns the cached rewards after one array comparison.
        """
        strings = to_numpy(sequences) if is_torch(sequences) or isinstance(sequences, np.ndarray) else None
        cached = self._rewards.get(prompt)
        if cached is not None and strings is not None and np.array_equal(cached[0], strings):
            return cached[1]
        keys = string_keys(sequences)
        if strings is None:
            strings = _padded_strings(keys)
            if cached is not None and np.array_equal(cached[0], strings):
                return cached[1]
        if prompt in self._exact_rewards:
            rewards = _aligned_rewards(prompt, keys, *self._exact_rewards[prompt])
        elif self.reward_fn is None:
            raise _UnknownPrompt(f"exact_rewards has no entry for prompt {prompt!r} and reward_fn is None")
        else:
            started = time.perf_counter()
            completion_ids = [list(s) for s in keys]
            completions = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
            rewards = _as_rewards(
                self.reward_fn(prompts=[prompt] * len(keys), completions=completions,
                               completion_ids=completion_ids),
                [prompt] * len(keys), "reward_fn (on the enumerated support)",
            )
            self.reward_seconds += time.perf_counter() - started
        self._rewards[prompt] = (np.array(strings, dtype=np.int64), rewards)
        return rewards

    def policy(self, model: torch.nn.Module, prompt_ids: list[int]) -> CausalLMPolicy:
        """``model``'s continuation law for ``prompt_ids`` as the trainer samples it."""
        return CausalLMPolicy(model, prompt_ids, self.max_new_tokens, self.eos, top_k=self.top_k,
                              temperature=self.temperature, max_support=self.max_support)

    def _enumerate(
        self, prompt: str, policy: CausalLMPolicy, reference: CausalLMPolicy
    ) -> tuple[Enumeration, Enumeration]:
        """The policy and the reference on one support.

        Without top-k both supports are every continuation, and a reference that is not
        synchronised with the policy (TRL's default ``sync_ref_model=False``) never
        changes: its enumeration is computed once per prompt and each evaluation
        enumerates only the policy (checked to list the same strings). Otherwise
        :func:`bonmath.hf.enumerate_pair` walks the union of the two supports.
        """
        static = self.top_k is None and not getattr(self.trainer.args, "sync_ref_model", False)
        if not static:
            pair = enumerate_pair(policy, reference)
            return pair.policy, pair.reference
        if prompt not in self._reference_enumerations:
            self._reference_enumerations[prompt] = reference.enumerate()
        cached, current = self._reference_enumerations[prompt], policy.enumerate()
        check_aligned({"policy": current, "reference": cached})
        return current, cached

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The exact metrics of the trainer's current model, averaged over the prompts."""
        started = time.perf_counter()
        model = self.trainer.model
        modules = list(model.modules()) + list(self.reference_model.modules())
        modes = [m.training for m in modules]
        try:
            model.eval()
            self.reference_model.eval()
            rows = []
            for prompt, ids in zip(self.prompts, self.prompt_ids):
                policy, reference = self._enumerate(prompt, self.policy(model, ids), self.policy(self.reference_model, ids))
                rewards = self.support_rewards(prompt, policy.sequences)
                rows.append(exact_metrics(policy.log_probs.cpu().numpy(),
                                          reference.log_probs.cpu().numpy(), rewards, self.n))
        finally:
            for module, mode in zip(modules, modes):
                module.training = mode
        self.seconds += time.perf_counter() - started
        return {f"exact/{key}": float(np.mean([row[key] for row in rows])) for key in METRICS}

    def _log(self, state) -> None:
        if not state.is_world_process_zero or self._last_step == state.global_step:
            return
        self._last_step = state.global_step
        metrics = self.evaluate()
        self.history.append({"step": state.global_step, **metrics})
        # transformers.Trainer.log, not TRL's log() (which would flush TRL's pending metrics).
        # Its on_log event resets control.should_log; the trainer's own logging at this step
        # must still happen (on every process alike), so the control flags are restored.
        control = self.trainer.control
        flags = dict(vars(control))
        transformers.Trainer.log(self.trainer, dict(metrics))
        vars(control).update(flags)
        self.trainer.control = control

    def on_train_begin(self, args, state, control, **kwargs):
        self._log(state)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.eval_every == 0 or state.global_step >= state.max_steps:
            self._log(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._log(state)
