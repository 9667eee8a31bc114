"""``python -m bonmath``: an exact Best-of-N table for a built-in toy language model.

For a random :class:`bonmath.TabularLM` whose reward counts good tokens minus bad
tokens (an integer, so strings tie), print for each N: the expected reward under
π_N, KL(π_N || π_ref) against Beirami et al.'s bound log N - (N-1)/N, the win rate
of π_N against π_ref against its bound N/(N+1), and KL(π* || π_N) for the optimum π*
of the vBoN lower bound (how far training on the bound lands from BoN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import bonmath
from bonmath.cli import option, parse_config
from bonmath.tabular import num_sequences

MAX_STRINGS = 2_000_000
"""Largest toy LM (number of strings) the demo enumerates."""


@dataclass(frozen=True)
class DemoConfig:
    """An exact Best-of-N table for a random tabular language model whose strings tie."""

    vocab_size: int = option("tokens including EOS", 6, minimum=2)
    max_len: int = option("maximum string length", 4, minimum=1)
    seed: int = option("seed of the random LM", 0, minimum=0)
    n: tuple[int, ...] = option("BoN N values", (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024), minimum=1)

    def __post_init__(self) -> None:
        size = num_sequences(self.vocab_size, self.max_len)
        if size > MAX_STRINGS:
            raise ValueError(f"vocabulary {self.vocab_size} and length {self.max_len} give {size:,} strings, "
                             f"more than the demo's limit of {MAX_STRINGS:,}")


def toy_task(vocab_size: int = 6, max_len: int = 4, seed: int = 0):
    """A random TabularLM (EOS = 0) and the reward #token 1 - #token 2 of each string."""
    lm = bonmath.TabularLM.random(vocab_size, max_len, rng=seed, eos_logit=0.5)
    sequences, ref_log_probs = lm.enumerate()
    rewards = (sequences == 1).sum(axis=1) - (sequences == 2).sum(axis=1)
    return lm, sequences, ref_log_probs, rewards.astype(np.float64)


def table(ref_log_probs, rewards, ns) -> list[dict]:
    rows = []
    for n in ns:
        bon = bonmath.bon_log_probs(ref_log_probs, rewards, n)
        bound_optimum = bonmath.vbon_bound_optimum(ref_log_probs, rewards, n)
        rows.append({
            "n": n,
            "reward": float(np.exp(bon) @ rewards),
            "kl": float(bonmath.kl_divergence(bon, ref_log_probs)),
            "kl_bound": bonmath.bon_kl_upper_bound(n),
            "win_rate": float(bonmath.win_rate(bon, ref_log_probs, rewards)),
            "win_rate_bound": n / (n + 1),
            "kl_bound_optimum_to_bon": float(bonmath.kl_divergence(bound_optimum, bon)),
        })
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_config(DemoConfig, argv, prog="python -m bonmath")
    lm, _, ref_log_probs, rewards = toy_task(args.vocab_size, args.max_len, args.seed)
    levels = np.unique(rewards).size
    print(f"Toy LM: vocabulary {lm.vocab_size} (EOS = 0), max length {lm.max_len}, {lm.num_sequences} strings; "
          f"reward = #1 - #2 ({levels} levels, so strings tie). E_ref[r] = {np.exp(ref_log_probs) @ rewards:.4f}.")
    print("All values exact (enumeration), in nats.\n")
    header = f"{'N':>5} {'E_N[r]':>8} {'KL(π_N‖π_ref)':>14} {'log N-(N-1)/N':>14} {'W(π_N,π_ref)':>13} {'N/(N+1)':>8} {'KL(π*_L‖π_N)':>13}"
    print(header)
    print("-" * len(header))
    rows = table(ref_log_probs, rewards, args.n)
    for row in rows:
        print(f"{row['n']:>5} {row['reward']:>8.4f} {row['kl']:>14.6f} {row['kl_bound']:>14.6f} "
              f"{row['win_rate']:>13.6f} {row['win_rate_bound']:>8.4f} {row['kl_bound_optimum_to_bon']:>13.6f}")
    return rows


if __name__ == "__main__":
    main()
