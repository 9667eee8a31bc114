"""How fast is the exact BoN law on large supports, and how does it compare with the
per-sample binomial sum of the vBoN paper's released code?

    python benchmarks/exact_scaling.py [--sizes 1e3 1e5 1e7] [--out results/exact_scaling.json] [--smoke]

Part 1 times ``bonmath.bon_log_probs`` on supports of 10^3..10^7 strings, with distinct
rewards and with rewards rounded to 3 decimals (so levels tie), and reports each time
as a ratio to ``numpy.argsort`` of the same rewards in the same run (target: <= 3x at 10^7).

Part 2 computes exact vBoN rewards R_N for 10^5 samples at n = 64 from per-sample
(F_lt, π_ref) pairs, with ``bonmath.bon_log_ratio_from_cdf`` and with a straightforward
per-sample loop over the binomial sum Σ_i C(n,i) F^(n-i) π^(i-1) (the approach of the
paper's released code), reports the speed ratio and the largest disagreement, and
shows the n at which the loop overflows while bonmath stays finite.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

import bonmath
from bonmath.cli import build_parser, option, parse_config

SMOKE_ARGV = ["--sizes", "1e3", "1e4", "--repeats", "1", "--samples", "2000"]
BYTES_PER_STRING = 100
"""Peak memory of one timed case per support string (logits, rewards, argsort, the law)."""
SECONDS_PER_STRING = 3e-7
"""bon_log_probs plus argsort, per string and repeat (2-core machine)."""
SECONDS_PER_TERM = 2e-7
"""The per-sample binomial-sum loop, per sample and term."""


@dataclass
class Config:
    """How fast is the exact BoN law on large supports, against argsort and the vBoN paper's per-sample loop?"""

    sizes: tuple[float, ...] = option("support sizes to time (whole numbers, e.g. 1e7)",
                                      (1e3, 1e4, 1e5, 1e6, 1e7), minimum=1)
    repeats: int = option("repeats per timing (best-of, and the median ratio)", 5, minimum=1)
    samples: int = option("samples of the per-sample comparison", 100_000, minimum=1)
    n: int = option("BoN n of the per-sample comparison", 64, minimum=1)
    seed: int = option("seed of the random supports", 0, minimum=0)
    out: Path | None = option("write the results as JSON here", None)
    smoke: bool = option("start from the smoke preset: " + " ".join(SMOKE_ARGV)
                         + "; options given explicitly override it", False)
    max_memory_gb: float = option("refuse runs estimated to need more memory (GB)", 8.0, minimum=0)
    max_minutes: float = option("refuse runs estimated to take longer (minutes)", 20.0, minimum=0)

    def __post_init__(self) -> None:
        for size in self.sizes:
            if size != int(size):
                raise ValueError(f"sizes must be whole numbers; got {size:g}")
        memory = BYTES_PER_STRING * max(self.sizes)
        seconds = (2 * self.repeats * SECONDS_PER_STRING * sum(self.sizes)
                   + (self.repeats + 1) * SECONDS_PER_TERM * self.samples * self.n)
        if memory > 1e9 * self.max_memory_gb or seconds > 60 * self.max_minutes:
            raise ValueError(
                f"refusing a run this large: the largest support ({max(self.sizes):.3g} strings) needs about "
                f"{memory / 1e9:.2g} GB, and the whole run about {seconds / 60:.2g} min (limits: max_memory_gb="
                f"{self.max_memory_gb:g}, max_minutes={self.max_minutes:g})"
            )


def seconds(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def best_time(func, repeats: int) -> float:
    return min(seconds(func) for _ in range(repeats))


def time_law(config: Config, rng: np.random.Generator) -> list[dict]:
    """bon_log_probs against argsort, the two calls alternated so that both see the same
    machine state (on a VM, faulting in fresh memory costs more at some moments than
    at others); best-of-``repeats`` times, and the median of the per-pair ratios."""
    rows = []
    cases = [(int(size), ties) for size in config.sizes for ties in (False, True)]
    for size, ties in tqdm(cases, desc="bon_log_probs vs argsort", unit="case"):
        logits = rng.standard_normal(size)
        ref = logits - np.logaddexp.reduce(logits)
        rewards = rng.random(size)
        if ties:
            rewards = np.round(rewards, 3)
        pairs = np.array([
            (seconds(partial(np.argsort, rewards)), seconds(partial(bonmath.bon_log_probs, ref, rewards, 16)))
            for _ in range(config.repeats)
        ])
        t_argsort, t_bon = pairs.min(axis=0)
        rows.append({
            "size": size,
            "rewards": "rounded to 3 decimals" if ties else "distinct",
            "levels": int(np.unique(rewards).size),
            "argsort_s": t_argsort,
            "bon_log_probs_s": t_bon,
            "ratio_to_argsort": t_bon / t_argsort,
            "median_ratio_to_argsort": float(np.median(pairs[:, 1] / pairs[:, 0])),
        })
    return rows


def binomial_sum_ratio(log_cdf_lt: float, log_prob: float, n: int) -> float:
    """log π_N/π_ref = log Σ_{i=1..n} C(n,i) F^(n-i) π^(i-1), term by term in floats."""
    cdf, prob = math.exp(log_cdf_lt), math.exp(log_prob)
    total = 0.0
    for i in range(1, n + 1):
        total += math.comb(n, i) * cdf ** (n - i) * prob ** (i - 1)
    return math.log(total)


def per_sample_comparison(config: Config, rng: np.random.Generator) -> dict:
    log_prob = np.log(rng.uniform(1e-6, 1e-2, config.samples))
    log_cdf_lt = np.log(rng.uniform(0.0, 1.0, config.samples) * (1 - np.exp(log_prob)))
    t_bonmath = best_time(lambda: bonmath.bon_log_ratio_from_cdf(log_cdf_lt, log_prob, config.n), config.repeats)
    start = time.perf_counter()
    loop = np.array([
        binomial_sum_ratio(f, p, config.n)
        for f, p in tqdm(zip(log_cdf_lt, log_prob), total=config.samples, desc="binomial-sum loop", unit="sample")
    ])
    t_loop = time.perf_counter() - start
    have = bonmath.bon_log_ratio_from_cdf(log_cdf_lt, log_prob, config.n)
    overflow = []
    for n in (64, 256, 512, 1000, 1030, 1100, 2000, 10**4, 10**6):
        try:
            loop_value = binomial_sum_ratio(math.log(0.5), math.log(1e-3), n) if n <= 10**4 else None
            loop_result = "not run (too slow)" if loop_value is None else f"{loop_value:.6g}"
        except OverflowError as err:
            loop_result = f"OverflowError: {err}"
        ours = float(bonmath.bon_log_ratio_from_cdf(math.log(0.5), math.log(1e-3), n))
        overflow.append({"n": n, "binomial_sum_loop": loop_result, "bonmath": ours})
    return {
        "samples": config.samples,
        "n": config.n,
        "bonmath_s": t_bonmath,
        "loop_s": t_loop,
        "speedup": t_loop / t_bonmath,
        "max_abs_difference": float(np.max(np.abs(have - loop))),
        "overflow": overflow,
    }


def parse_args(argv: list[str] | None = None) -> Config:
    """The command line as a :class:`Config`; bad values exit 2 with an argparse message."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if build_parser(Config).parse_known_args(argv)[0].smoke:
        argv = SMOKE_ARGV + argv  # later options win
    return parse_config(Config, argv, prog="exact_scaling.py")


def main(argv: list[str] | None = None) -> dict:
    config = parse_args(argv)
    rng = np.random.default_rng(config.seed)
    results = {"config": asdict(config), "law": time_law(config, rng), "per_sample": per_sample_comparison(config, rng)}

    print(f"\nBest of {config.repeats} (argsort and bon_log_probs alternated); ratio of the best times, "
          "and the median ratio over the pairs")
    print(f"{'size':>10} {'rewards':>22} {'levels':>9} {'argsort s':>10} {'bonmath s':>10} {'ratio':>7} {'median':>7}")
    for row in results["law"]:
        print(f"{row['size']:>10} {row['rewards']:>22} {row['levels']:>9} {row['argsort_s']:>10.4f} "
              f"{row['bon_log_probs_s']:>10.4f} {row['ratio_to_argsort']:>7.2f} {row['median_ratio_to_argsort']:>7.2f}")
    per = results["per_sample"]
    print(f"\nPer-sample vBoN rewards, {per['samples']} samples, n = {per['n']}: bonmath {per['bonmath_s']:.4f} s, "
          f"binomial-sum loop {per['loop_s']:.2f} s, speed-up {per['speedup']:.0f}x, "
          f"max |difference| {per['max_abs_difference']:.2e}")
    print("\nF_lt = 0.5, π = 1e-3:")
    for row in per["overflow"]:
        print(f"  n = {row['n']:>7}: loop {row['binomial_sum_loop']:<40} bonmath {row['bonmath']:.6g}")
    if config.out:
        config.out.parent.mkdir(parents=True, exist_ok=True)
        config.out.write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
