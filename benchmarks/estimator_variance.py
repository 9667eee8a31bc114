"""Bias, variance and cost of vBoN gradient estimators, exactly, on a TabularLM and a tiny GPT-2.

For each model, each N and each estimator of :mod:`bonmath.estimators` with k
samples per estimate, this reports

- the bias ||E ĝ - g|| of the estimate ĝ against the exact gradient g (autograd
  through the enumerated support: :func:`bonmath.estimators.exact_gradient`),
  and a Monte Carlo z-score of it;
- the total variance E||ĝ - E ĝ||² and the relative MSE E||ĝ - g||²/||g||²;
- the mean cosine E[cos(ĝ, g)];
- the wall time of one estimate (sample k strings from the model, score them,
  build the surrogate loss, backward).

Exact where possible: every estimator except GRPO's std normalisation has the
form (1/k) Σ v(y_i) + (1/k) Σ s(y_i)(f(y_i) - b_i), whose mean and variance are
finite sums over the support (:func:`bonmath.estimator_moments.exact_moments`).
The cosine, the z-scores and the GRPO rows use R Monte Carlo estimates built from
samples drawn with the models' own samplers (standard errors in the JSON). Every
timed estimate (the real pipeline: sampler, model, surrogate, backward) is also
rebuilt from the per-string decomposition and the two are compared
(``pipeline_check_max_rel_err``), so the exact numbers describe the code that runs.

The target g is the gradient of the loss -J = KL(π_θ||π_N) for every estimator
except the ``bound*`` rows, whose target is -∇L (the lower bound with the exact
F). The policy puts no mass on the lowest reward level (the strings starting
with a token it never emits first), so L is finite.

Usage::

    python benchmarks/estimator_variance.py                       # default run, < 3 min on 2 cores
    python benchmarks/estimator_variance.py --smoke --out /tmp/ev.json
    python benchmarks/estimator_variance.py --model gpt2 --n 8 --k 4 16 --plot ev.png
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bonmath import (
    EnumeratedPair,
    TabularLM,
    bon_log_ratio,
    entropy,
    enumerate_pair,
    estimate_log_cdf,
    kl_divergence,
    log_cdf_estimate_moments,
    reward_cdf,
)
from bonmath.estimator_moments import (
    estimate_coefficients,
    exact_moments,
    pair_scores,
    placement_vectors,
    shared_log_cdf_estimate_moments,
)
from bonmath.estimators import (
    analytic_token_kl,
    exact_gradient,
    flat_gradient,
    kl_penalty_surrogate,
    reward_surrogate,
    tabular_token_distributions,
    tabular_token_log_probs,
    vbon_bound_surrogate,
    vbon_surrogate,
)
from bonmath.testing import tiny_gpt2_policy_pair


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass
class Config:
    """One run of the benchmark."""

    model: str = _help("which models: tabular, gpt2 or both", "both")
    n: tuple[int, ...] = _help("BoN sample counts N", (2, 8, 32))
    k: tuple[int, ...] = _help("samples per gradient estimate k", (2, 4, 8, 16, 64))
    reps: int = _help("Monte Carlo estimates R per row (cosine, z-scores, GRPO rows)", 4000)
    cdf_samples: int = _help("M reference samples for the estimated-F row", 16)
    cdf_sweep: tuple[int, ...] = _help(
        "M values of the exact bias-vs-M table", (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)
    )
    timing_reps: int = _help("timed pipeline estimates per (model, estimator, k); the median is reported", 9)
    directions: int = _help("random unit directions for the z-scores (plus the gradient's own)", 3)
    seed: int = _help("seed for models, rewards, samples", 0)
    threads: int = _help("torch intra-op threads (1 is fastest for these tiny models)", 1)
    tabular_vocab: int = _help("TabularLM vocabulary V (EOS included)", 4)
    tabular_len: int = _help("TabularLM maximum length T", 4)
    gpt2_vocab: int = _help("tiny GPT-2 vocabulary V (the last token is EOS)", 6)
    gpt2_len: int = _help("tiny GPT-2 max_new_tokens L", 3)
    out: str | None = _help("write results JSON here (and a CSV next to it)", None)
    plot: str | None = _help("draw relative MSE against k to this PNG", None)
    markdown: str | None = _help("write a markdown summary table here", None)
    smoke: bool = _help("tiny, fast settings (< 20 s) for tests", False)


SMOKE = dict(
    n=(2, 8), k=(2, 4), reps=300, cdf_samples=4, cdf_sweep=(1, 4, 16), timing_reps=1,
    tabular_vocab=3, tabular_len=3, gpt2_vocab=4, gpt2_len=2,
)


# ----------------------------------------------------------------------- estimators


@dataclass(frozen=True)
class Estimator:
    """One gradient estimator: a reward part and a KL placement (see bonmath.estimators)."""

    name: str
    description: str
    target: str  # "vbon" (-J) or "bound" (-L)
    placement: str  # KL placement; "k1_reward" = KL as k1 in the reward (score function only)
    baseline: str
    normalize: str | None = None
    cdf_samples: bool = False  # F estimated from M reference samples
    claimed_unbiased: bool = True


def estimators(cdf_samples: int) -> list[Estimator]:
    return [
        Estimator("reinforce", "score x (log pi - log pi_N), no baseline", "vbon", "k1_reward", "none"),
        Estimator("rloo", "RLOO: k1 in the reward, leave-one-out (TRL RLOO)", "vbon", "k1_reward", "loo"),
        Estimator("mean_baseline", "k1 in the reward, mean-of-k baseline", "vbon", "k1_reward", "mean",
                  claimed_unbiased=False),
        Estimator("grpo", "GRPO: R_N mean/std-normalised + k3 per token in the loss (TRL GRPO)", "vbon",
                  "k3_loss", "mean", normalize="std", claimed_unbiased=False),
        Estimator("loo+k1_loss", "R_N with RLOO + k1 per token in the loss", "vbon", "k1_loss", "loo",
                  claimed_unbiased=False),
        Estimator("loo+k2_loss", "R_N with RLOO + k2 per token in the loss", "vbon", "k2_loss", "loo",
                  claimed_unbiased=False),
        Estimator("loo+k3_loss", "R_N with RLOO + k3 per token in the loss", "vbon", "k3_loss", "loo",
                  claimed_unbiased=False),
        Estimator("loo+reward_to_go", "R_N with RLOO + per-token KL reward-to-go", "vbon", "reward_to_go", "loo"),
        Estimator("loo+analytic", "R_N with RLOO + analytic per-token KL (pathwise only)", "vbon", "analytic",
                  "loo", claimed_unbiased=False),
        Estimator("loo+analytic_score", "R_N with RLOO + analytic per-token KL + score terms", "vbon",
                  "analytic_score", "loo"),
        Estimator("bound_rloo", "bound reward (N-1) log F_lt, exact F, RLOO; target -grad L", "bound",
                  "k1_reward", "loo"),
        Estimator(f"bound_rloo_Fhat{cdf_samples}",
                  f"bound with F-hat from M={cdf_samples} reference samples (add-one), RLOO; target -grad L",
                  "bound", "k1_reward", "loo", cdf_samples=True, claimed_unbiased=False),
    ]


# --------------------------------------------------------------------------- models


@dataclass
class Problem:
    """A policy/reference pair on an enumerated support, with samplers and per-token access."""

    name: str
    description: str
    pair: EnumeratedPair
    params: list[torch.Tensor]
    rewards: np.ndarray  # (S_full,)
    sample_policy: Callable[[int, int], list]  # (count, seed) -> strings
    sample_ref: Callable[[int, int], list]
    token_log_probs: Callable  # strings -> (values with graph, mask)
    ref_token_log_probs: Callable
    token_dists: Callable  # strings -> (k, T, V) with graph
    ref_token_dists: Callable


def lowest_level_rewards(pair: EnumeratedPair, rng: np.random.Generator) -> np.ndarray:
    """Reward 0 for strings whose first token the policy never emits; 1..4 at random otherwise."""
    rewards = rng.integers(1, 5, size=len(pair.sequences)).astype(np.float64)
    never = (pair.token_log_probs[:, 0] == -math.inf).detach().numpy()
    rewards[never] = 0.0
    return rewards


def tabular_problem(vocab_size: int, max_len: int, seed: int, policy_noise: float = 0.7) -> Problem:
    """Random reference LM; policy = reference logits + noise, never emitting EOS first."""
    rng = np.random.default_rng(seed)
    ref_logits = [rng.standard_normal(((vocab_size - 1) ** t, vocab_size)) for t in range(max_len)]
    params = [torch.tensor(t + policy_noise * rng.standard_normal(t.shape), requires_grad=True) for t in ref_logits]
    block = torch.zeros(1, vocab_size, dtype=torch.float64)
    block[0, 0] = -math.inf  # EOS = 0 is never the first token: the empty string is the lowest level
    policy = TabularLM.from_logits([params[0] + block, *params[1:]], eos_id=0)
    ref = TabularLM.from_logits([torch.tensor(t) for t in ref_logits], eos_id=0)
    pair = enumerate_pair(policy, ref)

    def sampler(lm):
        def sample(count, sample_seed):
            return list(lm.sample(count, rng=sample_seed).numpy())
        return sample

    return Problem(
        name="tabular",
        description=f"TabularLM V={vocab_size} (EOS=0), T={max_len}: {len(pair.sequences)} strings",
        pair=pair,
        params=params,
        rewards=lowest_level_rewards(pair, rng),
        sample_policy=sampler(policy),
        sample_ref=sampler(ref),
        token_log_probs=lambda seqs: tabular_token_log_probs(policy, np.stack(seqs)),
        ref_token_log_probs=lambda seqs: tabular_token_log_probs(ref, np.stack(seqs)),
        token_dists=lambda seqs: tabular_token_distributions(policy, np.stack(seqs)),
        ref_token_dists=lambda seqs: tabular_token_distributions(ref, np.stack(seqs)),
    )


def gpt2_problem(vocab_size: int, max_new_tokens: int, seed: int, scale: float = 10.0,
                 policy_noise: float = 0.5) -> Problem:
    """Tiny GPT-2 reference (GPT2Config, seeded, float64); policy = perturbed copy with top_k = V-1."""
    policy, ref = tiny_gpt2_policy_pair(vocab_size, max_new_tokens, seed, scale, policy_noise)
    pair = enumerate_pair(policy, ref)

    def sampler(lm, chunk=16384):
        def sample(count, sample_seed):  # in chunks: the KV cache of 10^5 rows is large
            generator = torch.Generator().manual_seed(sample_seed)
            out = []
            for start in range(0, count, chunk):
                out += lm.sample(min(chunk, count - start), generator=generator)
            return out
        return sample

    def ref_log_probs(seqs):
        with torch.no_grad():
            return ref.token_log_probs(seqs)

    def ref_dists(seqs):
        with torch.no_grad():
            return ref.token_distributions(seqs)

    return Problem(
        name="gpt2",
        description=(f"GPT-2 (2 layers, d=16) V={vocab_size} (EOS={vocab_size - 1}), L={max_new_tokens}, "
                     f"policy top_k={vocab_size - 1}: {len(pair.sequences)} strings"),
        pair=pair,
        params=list(policy.model.parameters()),
        rewards=lowest_level_rewards(pair, np.random.default_rng(seed)),
        sample_policy=sampler(policy),
        sample_ref=sampler(ref),
        token_log_probs=policy.token_log_probs,
        ref_token_log_probs=ref_log_probs,
        token_dists=policy.token_distributions,
        ref_token_dists=ref_dists,
    )


# ------------------------------------------------------------ per-string quantities


@dataclass
class Basis:
    """Everything per string on the policy's support (strings with π_θ > 0)."""

    keep: torch.Tensor  # indices into the full support
    probs: torch.Tensor  # (S,)
    score: torch.Tensor  # (S, P)
    vectors: dict  # placement -> (v (S,P) or None, f (S,))
    grams: dict  # placement -> (Gvv, Gvs) ; "ss" -> Gss
    log_ratio: torch.Tensor  # (S,) log π_θ - log π_ref
    rewards: np.ndarray  # (S,)
    position: np.ndarray  # full support position -> basis position (-1 off the policy's support)


def build_basis(problem: Problem, placements: list[str]) -> Basis:
    pair = problem.pair
    lp = pair.policy_log_probs.detach()
    keep = torch.nonzero(lp > -math.inf).squeeze(1)
    token_scores, kl_gradient = pair_scores(pair, problem.params, keep)
    mask = pair.mask[keep]
    token_log_ratio = torch.where(mask, pair.token_log_probs[keep].detach() - pair.ref_token_log_probs[keep], 0.0)
    token_kl = pair.token_kl[keep].detach()
    score = token_scores.sum(1)
    vectors, grams = {}, {"ss": score @ score.T}
    for placement in placements:
        v, f = placement_vectors(placement, token_scores, mask, token_log_ratio,
                                 token_kl=token_kl, kl_gradient=kl_gradient)
        vectors[placement] = (v, f)
        grams[placement] = None if v is None else (v @ v.T, v @ score.T)
    position = np.full(len(pair.sequences), -1)
    position[keep.numpy()] = np.arange(len(keep))
    return Basis(
        keep=keep,
        probs=lp[keep].exp(),
        score=score,
        vectors=vectors,
        grams=grams,
        log_ratio=(lp - pair.ref_log_probs)[keep],
        rewards=problem.rewards[keep.numpy()],
        position=position,
    )


# ------------------------------------------------------------------------- analysis


def row_stats(a, w, basis: Basis, v, grams_v, g, proj):
    """Norms, dot products with g and projections of R estimates ĝ_r = a_r V + w_r S."""
    Gss = basis.grams["ss"]
    sq = torch.einsum("ra,ab,rb->r", w, Gss, w)
    dot = w @ proj["sg"]
    projections = w @ proj["sU"]
    if v is not None:
        Gvv, Gvs = grams_v
        sq = sq + torch.einsum("ra,ab,rb->r", a, Gvv, a) + 2 * torch.einsum("ra,ab,rb->r", a, Gvs, w)
        dot = dot + a @ proj["vg"]
        projections = projections + a @ proj["vU"]
    gnorm = float(g.norm())
    norms = sq.clamp_min(0).sqrt()
    cos = torch.where(norms > 0, dot / (norms * gnorm), torch.zeros_like(dot))
    return sq, dot, projections, cos


def analyse(cfg: Config, problem: Problem, basis: Basis, specs: list[Estimator], progress) -> tuple[list, list, dict]:
    pair, params = problem.pair, problem.params
    plp, rlp = pair.policy_log_probs, pair.ref_log_probs.detach()
    rewards_full = torch.as_tensor(problem.rewards)
    S = len(basis.keep)
    P = basis.score.shape[1]
    generator = torch.Generator().manual_seed(cfg.seed + 7)
    random_dirs = torch.randn(P, cfg.directions, generator=generator, dtype=torch.float64)
    random_dirs = random_dirs / random_dirs.norm(dim=0, keepdim=True)

    # one pool of samples from each model's own sampler, shared by all rows
    kmax = max(cfg.k)
    pool_keys = problem.sample_policy(cfg.reps * kmax, cfg.seed + 11)
    pool = torch.as_tensor(basis.position[pair.index(pool_keys)])
    ref_keys = problem.sample_ref(cfg.reps * cfg.cdf_samples, cfg.seed + 13)
    ref_pool = torch.as_tensor(problem.rewards[pair.index(ref_keys)]).reshape(
        cfg.reps, cfg.cdf_samples)
    basis_rewards = torch.as_tensor(basis.rewards)
    log_cdf_hat_reps = estimate_log_cdf(ref_pool, basis_rewards)  # (R, S), the package's own estimator

    rows, cdf_rows, model_info = [], [], {"gradient_norms": {}}
    for n in cfg.n:
        log_ratio_n = bon_log_ratio(rlp, rewards_full, n)[basis.keep]
        log_cdf_lt = reward_cdf(rlp, rewards_full)[0][basis.keep]
        targets = {
            "vbon": exact_gradient("vbon", plp, rlp, params, rewards=rewards_full, n=n),
            "bound": exact_gradient("vbon_bound", plp, rlp, params, rewards=rewards_full, n=n),
        }
        model_info["gradient_norms"][str(n)] = {t: float(g.norm()) for t, g in targets.items()}
        hat_mean, hat_second = shared_log_cdf_estimate_moments(log_cdf_lt, cfg.cdf_samples)
        for spec in specs:
            g = targets[spec.target]
            v, f_kl = basis.vectors[spec.placement]
            U = torch.cat([(g / g.norm())[:, None], random_dirs], dim=1)
            proj = {"sg": basis.score @ g, "sU": basis.score @ U}
            if v is not None:
                proj.update(vg=v @ g, vU=v @ U)
            f_second = None
            if spec.target == "vbon":
                f_mean = f_kl - log_ratio_n
                f_reps = None
            elif not spec.cdf_samples:
                f_mean = basis.log_ratio - (n - 1) * log_cdf_lt
                f_reps = None
            else:
                lr = basis.log_ratio
                f_mean = lr - (n - 1) * hat_mean
                f_second = (torch.outer(lr, lr) - (n - 1) * (torch.outer(lr, hat_mean) + torch.outer(hat_mean, lr))
                            + (n - 1) ** 2 * hat_second)
                f_reps = lr[None, :] - (n - 1) * log_cdf_hat_reps  # (R, S)
            for k in cfg.k:
                if spec.baseline == "loo" and k < 2:
                    continue
                index = pool[: cfg.reps * k].reshape(cfg.reps, k)
                f_values = f_mean[index] if f_reps is None else torch.gather(f_reps, 1, index)
                a, w = estimate_coefficients(index, f_values, S, baseline=spec.baseline, normalize=spec.normalize)
                sq, dot, projections, cos = row_stats(a, w, basis, v, basis.grams[spec.placement], g, proj)
                R = cfg.reps
                mc_mean_proj = projections.mean(0)
                want_proj = U.T @ g
                exact = spec.normalize is None
                row = dict(model=problem.name, n=n, estimator=spec.name, k=k, exact=exact, reps=R,
                           claimed_unbiased=spec.claimed_unbiased, grad_norm=float(g.norm()),
                           mean_cosine=float(cos.mean()), mean_cosine_se=float(cos.std() / math.sqrt(R)))
                if exact:
                    mom = exact_moments(basis.probs, v, basis.score, f_mean, f_second, k=k, baseline=spec.baseline)
                    bias = mom.mean - g
                    var = mom.total_variance
                    var_u = torch.tensor([
                        exact_moments(basis.probs, None if v is None else v @ U[:, j:j + 1], basis.score @ U[:, j:j + 1],
                                      f_mean, f_second, k=k, baseline=spec.baseline).total_variance
                        for j in range(U.shape[1])
                    ])
                    se_u = (var_u / R).sqrt()
                    mean_u = U.T @ mom.mean
                    row.update(bias_norm=float(bias.norm()), bias_norm_se=0.0, total_variance=var,
                               total_variance_se=0.0,
                               mc_vs_exact_z=float(((mc_mean_proj - mean_u) / se_u).abs().max()))
                else:
                    mean_vec = a.mean(0) @ (v if v is not None else torch.zeros(S, P, dtype=torch.float64)) \
                        + w.mean(0) @ basis.score
                    var = float(R / (R - 1) * (sq.mean() - mean_vec @ mean_vec))
                    bias_vec = mean_vec - g
                    bias_sq = max(float(bias_vec @ bias_vec) - var / R, 0.0)
                    se_u = projections.std(0) / math.sqrt(R)
                    e = bias_vec / bias_vec.norm()
                    along = (a @ (v @ e) if v is not None else 0.0) + w @ (basis.score @ e)
                    row.update(bias_norm=math.sqrt(bias_sq), bias_norm_se=float(along.std() / math.sqrt(R)),
                               total_variance=var,
                               total_variance_se=float(sq.std() / math.sqrt(R)),
                               mc_vs_exact_z=None)
                    bias = bias_vec
                row["bias_z"] = float(((mc_mean_proj - want_proj) / se_u).abs().max())
                gsq = float(g @ g)
                row["rel_bias"] = row["bias_norm"] / math.sqrt(gsq)
                row["rel_variance"] = row["total_variance"] / gsq
                row["rel_mse"] = (row["bias_norm"] ** 2 + row["total_variance"]) / gsq
                mean_vec = bias + g
                row["cos_of_mean"] = float(mean_vec @ g / (mean_vec.norm() * g.norm()))
                rows.append(row)
                progress.update(1)
        # exact bias of the estimated-F bound estimator against M (any k with RLOO)
        g = targets["bound"]
        for m in cfg.cdf_sweep:
            mean_hat, _ = log_cdf_estimate_moments(log_cdf_lt, m)
            f_m = basis.log_ratio - (n - 1) * mean_hat
            mu = (basis.probs * f_m) @ basis.score
            bias = mu - g
            cdf_rows.append(dict(model=problem.name, n=n, m=m, bias_norm=float(bias.norm()),
                                 rel_bias=float(bias.norm() / g.norm()),
                                 cosine=float(mu @ g / (mu.norm() * g.norm())),
                                 mean_log_cdf_bias=float(basis.probs @ (mean_hat - log_cdf_lt))))
    return rows, cdf_rows, model_info


# --------------------------------------------------------------------------- timing


def time_estimates(cfg: Config, problem: Problem, basis: Basis, specs: list[Estimator], progress) -> tuple[dict, float]:
    """Seconds per estimate of the real pipeline, and its largest deviation from the decomposition."""
    n = cfg.n[0]
    pair = problem.pair
    rewards_full = torch.as_tensor(problem.rewards)
    rlp_full = pair.ref_log_probs.detach()
    ratio_full = bon_log_ratio(rlp_full, rewards_full, n)
    log_cdf_full = reward_cdf(rlp_full, rewards_full)[0]
    seconds, worst = {}, 0.0
    for spec in specs:
        v, f_kl = basis.vectors[spec.placement]
        for k in cfg.k:
            if spec.baseline == "loo" and k < 2:
                continue
            times = []
            for rep in range(cfg.timing_reps + 1):  # the first run warms up and is not timed
                seed = cfg.seed + 1000 * rep + k
                start = time.perf_counter()
                seqs = problem.sample_policy(k, seed)
                full = pair.index(seqs)
                if spec.placement in ("analytic", "analytic_score"):  # one forward per model
                    dists, ref_dists = problem.token_dists(seqs), problem.ref_token_dists(seqs)
                    token_kl = analytic_token_kl(dists, ref_dists)
                    lengths = torch.as_tensor(pair.lengths)[full]
                    mask = torch.arange(dists.shape[1])[None, :] < lengths[:, None]
                    tokens = torch.tensor([[max(int(t), 0) for t in _pad(s, mask.shape[1])] for s in seqs])
                    values = torch.where(mask, dists.gather(-1, tokens[..., None])[..., 0], 0.0)
                    ref_values = torch.where(mask, ref_dists.gather(-1, tokens[..., None])[..., 0], 0.0)
                else:
                    token_kl = None
                    values, mask = problem.token_log_probs(seqs)
                    ref_values, _ = problem.ref_token_log_probs(seqs)
                lp, ref_lp = values.sum(-1), ref_values.sum(-1)
                if spec.target == "vbon":
                    ratio = ratio_full[full]
                    if spec.placement == "k1_reward":
                        loss = vbon_surrogate(lp, ref_lp, ratio, spec.baseline)
                    else:
                        loss = reward_surrogate(lp, ratio, spec.baseline, spec.normalize) + kl_penalty_surrogate(
                            values, ref_values, mask, spec.placement, spec.baseline, token_kl)
                    log_cdf = None
                else:
                    if spec.cdf_samples:
                        ref_seqs = problem.sample_ref(cfg.cdf_samples, seed + 1)
                        ref_rewards = rewards_full[pair.index(ref_seqs)]
                        log_cdf = estimate_log_cdf(ref_rewards, rewards_full[full])
                    else:
                        log_cdf = log_cdf_full[full]
                    loss = vbon_bound_surrogate(lp, ref_lp, log_cdf, n, spec.baseline)
                have = flat_gradient(loss, problem.params)
                if rep > 0:
                    times.append(time.perf_counter() - start)

                # the same estimate from the per-string decomposition
                index = torch.as_tensor(basis.position[full])[None]
                if spec.target == "vbon":
                    f_values = (f_kl - bon_log_ratio(rlp_full, rewards_full, n)[basis.keep])[index]
                else:
                    f_values = basis.log_ratio[index] - (n - 1) * log_cdf[None, :]
                a, w = estimate_coefficients(index, f_values, len(basis.keep), baseline=spec.baseline,
                                             normalize=spec.normalize)
                want = w[0] @ basis.score + (a[0] @ v if v is not None else 0.0)
                scale = max(float(want.norm()), float(have.norm()), 1e-8 * float(basis.score.norm()))
                err = float((have - want).norm()) / scale
                if err > 1e-8:
                    print(f"pipeline check: {problem.name} {spec.name} k={k}: relative error {err:.3g}")
                worst = max(worst, err)
            seconds[(spec.name, k)] = float(np.median(times))
            progress.update(1)
    return seconds, worst


def _pad(s, length):
    values = s.tolist() if hasattr(s, "tolist") else list(s)
    return list(values) + [0] * (length - len(values))


# ----------------------------------------------------------------------- reporting


COLUMNS = ["model", "n", "estimator", "k", "exact", "bias_norm", "rel_bias", "bias_z", "total_variance",
           "rel_variance", "rel_mse", "mean_cosine", "seconds_per_estimate", "claimed_unbiased", "mc_vs_exact_z",
           "bias_norm_se", "total_variance_se", "mean_cosine_se", "cos_of_mean", "grad_norm", "reps"]


def print_table(rows: list[dict], cdf_rows: list[dict]) -> None:
    head = (f"{'model':7} {'N':>3} {'estimator':22} {'k':>3} {'|bias|':>10} {'|bias|/|g|':>11} {'z':>7} "
            f"{'cos(Eg,g)':>9} {'trVar':>10} {'relMSE':>10} {'E cos':>6} {'ms/est':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        flag = "" if r["exact"] else "*"
        print(f"{r['model']:7} {r['n']:>3} {r['estimator']:22} {r['k']:>3} {r['bias_norm']:>10.3g} "
              f"{r['rel_bias']:>10.3g}{flag:1} {r['bias_z']:>7.1f} {r['cos_of_mean']:>9.4f} "
              f"{r['total_variance']:>10.4g} {r['rel_mse']:>10.4g} {r['mean_cosine']:>6.3f} "
              f"{1000 * r['seconds_per_estimate']:>7.2f}")
    print("bias, trVar and relMSE exact except * (Monte Carlo, R estimates); z: Monte Carlo mean of R estimates vs "
          "the exact gradient, max over the gradient's direction and random directions, in standard errors; "
          "E cos: mean cosine of one estimate with g (Monte Carlo)")
    print()
    print(f"{'model':7} {'N':>3} {'M':>5} {'|bias|/|g_L|':>13} {'cos(E g, g_L)':>14} {'E[log F^ - log F]':>18}")
    for r in cdf_rows:
        print(f"{r['model']:7} {r['n']:>3} {r['m']:>5} {r['rel_bias']:>13.4g} {r['cosine']:>14.4f} "
              f"{r['mean_log_cdf_bias']:>18.4g}")


def markdown_summary(results: dict, ks=(4, 64)) -> str:
    """Markdown tables: per model and N, relative MSE at two k, mean cosine, bias, cost; then bias vs M."""
    rows = results["rows"]
    present = sorted({r["k"] for r in rows})
    ks = [k for k in ks if k in present] or present[:2]
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for n in dict.fromkeys(r["n"] for r in rows if r["model"] == model):
            block = [r for r in rows if r["model"] == model and r["n"] == n]
            lines.append(f"\n**{model}, N = {n}**\n")
            lines.append("| estimator | " + " | ".join(f"relMSE k={k}" for k in ks)
                         + f" | E cos k={ks[-1]} | rel. bias | cos(Eĝ, g) | ms/estimate k={ks[-1]} |")
            lines.append("|---|" + "---:|" * (len(ks) + 4))
            for name in dict.fromkeys(r["estimator"] for r in block):
                by_k = {r["k"]: r for r in block if r["estimator"] == name}
                last = by_k.get(ks[-1]) or by_k[max(by_k)]
                cells = ["–" if k not in by_k else f"{by_k[k]['rel_mse']:.3g}" for k in ks]
                star = "" if last["exact"] else "*"
                lines.append(f"| {name} | " + " | ".join(cells) + f" | {last['mean_cosine']:.2f} | "
                             f"{last['rel_bias']:.2g}{star} | {last['cos_of_mean']:.3f} | "
                             f"{1000 * last['seconds_per_estimate']:.1f} |")
    cdf = results["cdf_bias"]
    if cdf:
        ms = sorted({r["m"] for r in cdf})
        lines.append("\n**Estimated F (add-one, M reference samples) in the bound estimator: exact relative bias "
                     "‖E ĝ − (−∇L)‖/‖∇L‖ (any k, RLOO)**\n")
        lines.append("| model | N | " + " | ".join(f"M={m}" for m in ms) + " |")
        lines.append("|---|---:|" + "---:|" * len(ms))
        for model in dict.fromkeys(r["model"] for r in cdf):
            for n in dict.fromkeys(r["n"] for r in cdf if r["model"] == model):
                by_m = {r["m"]: r for r in cdf if r["model"] == model and r["n"] == n}
                lines.append(f"| {model} | {n} | " + " | ".join(f"{by_m[m]['rel_bias']:.3g}" for m in ms) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: str) -> None:
    """Relative MSE against k, one panel per (model, N), from the results JSON dict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    ns = list(dict.fromkeys(r["n"] for r in rows))
    fig, axes = plt.subplots(len(models), len(ns), figsize=(4 * len(ns), 3.4 * len(models)), squeeze=False,
                             sharex=True)
    for i, model in enumerate(models):
        for j, n in enumerate(ns):
            ax = axes[i][j]
            names = list(dict.fromkeys(r["estimator"] for r in rows))
            colors = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(names), 2)))
            for color, name in zip(colors, names):
                pts = sorted((r["k"], r["rel_mse"], r["claimed_unbiased"]) for r in rows
                             if r["model"] == model and r["n"] == n and r["estimator"] == name)
                if pts:
                    ks, mse, unbiased = zip(*pts)
                    ax.plot(ks, mse, marker="o", ms=3, color=color, label=name,
                            linestyle="-" if unbiased[0] else "--")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{model}, N={n}", fontsize=9)
            ax.set_xlabel("k (samples per estimate)")
            ax.set_ylabel("E|g_hat - g|^2 / |g|^2")
    axes[0][-1].legend(fontsize=6, loc="upper right", title="dashed: biased", title_fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(Config):
        option = "--" + f.name.replace("_", "-")
        kwargs = dict(help=f.metadata.get("help", ""), default=f.default)
        if f.type in ("bool", bool):
            parser.add_argument(option, action="store_true", **kwargs)
        elif str(f.type).startswith("tuple"):
            parser.add_argument(option, type=int, nargs="+", **kwargs)
        elif f.name == "model":
            parser.add_argument(option, choices=("tabular", "gpt2", "both"), **kwargs)
        elif str(f.type).startswith("int"):
            parser.add_argument(option, type=int, **kwargs)
        else:
            parser.add_argument(option, type=str, **kwargs)
    args = vars(parser.parse_args(argv))
    explicit = {key for key in args if args[key] != getattr(Config, key, None)}
    if args["smoke"]:
        for key, value in SMOKE.items():
            if key not in explicit:
                args[key] = value
    args = {key: tuple(value) if isinstance(value, list) else value for key, value in args.items()}
    return Config(**args)


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_args(argv)
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    specs = estimators(cfg.cdf_samples)
    placements = sorted({s.placement for s in specs})
    builders = {
        "tabular": lambda: tabular_problem(cfg.tabular_vocab, cfg.tabular_len, cfg.seed),
        "gpt2": lambda: gpt2_problem(cfg.gpt2_vocab, cfg.gpt2_len, cfg.seed),
    }
    names = ["tabular", "gpt2"] if cfg.model == "both" else [cfg.model]
    per_model_rows = sum(1 for s in specs for k in cfg.k if not (s.baseline == "loo" and k < 2))
    progress = tqdm(total=len(names) * per_model_rows * (len(cfg.n) + 1), desc="estimator_variance",
                    unit="row", disable=None)
    rows, cdf_rows, models, checks = [], [], {}, {}
    for name in names:
        t0 = time.perf_counter()
        problem = builders[name]()
        basis = build_basis(problem, placements)
        setup = time.perf_counter() - t0
        r, c, info = analyse(cfg, problem, basis, specs, progress)
        seconds, worst = time_estimates(cfg, problem, basis, specs, progress)
        for row in r:
            row["seconds_per_estimate"] = seconds[(row["estimator"], row["k"])]
        rows += r
        cdf_rows += c
        pair = problem.pair
        plp = pair.policy_log_probs.detach()
        info.update(
            description=problem.description,
            num_strings=len(pair.sequences),
            policy_support=len(basis.keep),
            num_params=int(basis.score.shape[1]),
            kl_policy_ref=float(kl_divergence(plp, pair.ref_log_probs)),
            policy_entropy=float(entropy(plp)),
            ref_entropy=float(entropy(pair.ref_log_probs)),
            setup_seconds=setup,
        )
        models[name] = info
        checks[name] = worst
    progress.close()
    results = {
        "config": asdict(cfg),
        "estimators": [asdict(s) for s in specs],
        "models": models,
        "rows": [{c: row.get(c) for c in COLUMNS} for row in rows],
        "cdf_bias": cdf_rows,
        "pipeline_check_max_rel_err": checks,
        "runtime_seconds": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
    }
    print_table(results["rows"], cdf_rows)
    print(f"\npipeline vs decomposition, max relative error: {checks}")
    print(f"runtime {results['runtime_seconds']:.1f} s")
    if cfg.out:
        out = Path(cfg.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
        with open(out.with_suffix(".csv"), "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(results["rows"])
    if cfg.markdown:
        Path(cfg.markdown).write_text(markdown_summary(results))
    if cfg.plot:
        plot(results, cfg.plot)
    return results


if __name__ == "__main__":
    main()
