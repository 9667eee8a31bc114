"""Exact enumeration of a causal LM: prefix tree with a shared KV cache vs naive.

Both methods compute every complete continuation of one prompt and its exact
log-probability under a tiny GPT-2 (built locally, float64 by default):

- ``tree``: :meth:`bonmath.hf.CausalLMPolicy.enumerate`, which runs each
  unfinished prefix through the model once, as one token on its parent's cache;
- ``naive``: list every continuation, then run each full prompt + continuation
  through the model (right-padded batches of ``--batch-size``, no cache sharing)
  with :meth:`~bonmath.hf.CausalLMPolicy.log_prob`.

Token positions are counted with a forward pre-hook on the model (the
``input_ids`` entries of every forward call, padding included), wall time is the
best of up to ``repeats`` runs within a time budget (all are kept in the JSON),
with autograd on (both results are differentiable).

Usage::

    python benchmarks/enumerate_speed.py --out results/enumerate_speed.json
    python benchmarks/enumerate_speed.py --smoke
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm
from transformers import GPT2Config, GPT2LMHeadModel

from bonmath.cli import build_parser, option, parse_config
from bonmath.enumeration import string_keys
from bonmath.hf import CausalLMPolicy
from bonmath.tabular import num_sequences

SMOKE_ARGV = ["--vocab-size", "6", "--max-new-tokens", "3", "--n-embd", "16", "--repeats", "1"]
SECONDS_PER_POSITION = 1e-5
"""Naive method's forward + autograd cost per token position (d = 32, 2 layers, 2-core machine)."""


@dataclass
class Config:
    """Exact enumeration of a causal LM: prefix tree with a shared KV cache against every continuation in full."""

    vocab_size: int = option("V; the last token is EOS", 16, minimum=2)
    max_new_tokens: int = option("L, the longest continuation", 4, minimum=1)
    prompt: tuple[int, ...] = option("prompt token ids", (1, 2, 3), minimum=0)
    n_embd: int = option("GPT-2 width", 32, minimum=1)
    n_layer: int = option("GPT-2 layers", 2, minimum=1)
    n_head: int = option("GPT-2 attention heads (must divide n_embd)", 2, minimum=1)
    dtype: Literal["float64", "float32"] = option("model dtype", "float64")
    batch_size: int = option("prefixes / strings per forward call, both methods", 1024, minimum=1)
    repeats: int = option("wall time is the best of up to this many runs ...", 3, minimum=1)
    time_budget: float = option("... started while a method's total time is below this (s)", 5.0, minimum=0)
    threads: int = option("torch intra-op threads", 1, minimum=1)
    seed: int = option("seed of the model weights", 0, minimum=0)
    out: Path | None = option("write the results as JSON here", None)
    smoke: bool = option("start from the smoke preset: " + " ".join(SMOKE_ARGV)
                         + "; options given explicitly override it", False)
    max_minutes: float = option("refuse runs whose naive method is estimated to take longer (minutes)", 10.0,
                                minimum=0)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head={self.n_head} must divide n_embd={self.n_embd}")
        if any(t >= self.vocab_size for t in self.prompt):
            raise ValueError(f"prompt {self.prompt} holds token ids outside the vocabulary of size {self.vocab_size}")
        strings = num_sequences(self.vocab_size, self.max_new_tokens)
        positions = strings * (len(self.prompt) + self.max_new_tokens)
        seconds = SECONDS_PER_POSITION * positions * (self.n_embd / 32) * (self.n_layer / 2)
        if seconds > 60 * self.max_minutes:
            raise ValueError(
                f"refusing a run this large: {strings} continuations, about {positions:.3g} token positions "
                f"for the naive method, about {seconds / 60:.2g} min per run (limit: max_minutes="
                f"{self.max_minutes:g}); lower vocab_size or max_new_tokens"
            )


def build_model(cfg: Config) -> GPT2LMHeadModel:
    """A tiny GPT-2 from GPT2Config, seeded; embeddings scaled away from uniform."""
    config = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=len(cfg.prompt) + cfg.max_new_tokens,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        bos_token_id=0,
        eos_token_id=cfg.vocab_size - 1,
    )
    torch.manual_seed(cfg.seed)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        model.transformer.wte.weight.mul_(25.0)
    return model.to(getattr(torch, cfg.dtype)).eval()


class PositionCounter:
    """Counts forward calls and input token positions of a model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = self.positions = 0
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        self.calls += 1
        self.positions += input_ids.numel()

    def reset(self) -> None:
        self.calls = self.positions = 0

    def remove(self) -> None:
        self._handle.remove()


def complete_continuations(V: int, L: int, eos: int) -> list[tuple[int, ...]]:
    """Every continuation generate can return: EOS-terminated, or L tokens long."""
    non_eos = [t for t in range(V) if t != eos]
    out = [(*p, eos) for n in range(L) for p in itertools.product(non_eos, repeat=n)]
    out += [(*p, t) for p in itertools.product(non_eos, repeat=L - 1) for t in non_eos]
    return sorted(out)


def naive_enumerate(
    policy: CausalLMPolicy, batch_size: int
) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """Every continuation run through the model in full, ``batch_size`` at a time."""
    (eos,) = policy.eos_token_ids
    seqs = complete_continuations(policy.vocab_size, policy.max_new_tokens, eos)
    log_probs = [policy.log_prob(seqs[i : i + batch_size]) for i in range(0, len(seqs), batch_size)]
    return seqs, torch.cat(log_probs)


def timed(fn, counter: PositionCounter, repeats: int, time_budget: float, name: str):
    """Best wall time of up to ``repeats`` runs (a new run starts only while the
    total is under ``time_budget`` seconds); positions and calls of one run."""
    times: list[float] = []
    with tqdm(total=repeats, desc=f"enumerate ({name})", unit="run", disable=None) as bar:
        while len(times) < repeats and sum(times) < time_budget:
            counter.reset()
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
            bar.update(1)
    stats = {"seconds": min(times), "all_seconds": times}
    return result, {**stats, "positions": counter.positions, "forward_calls": counter.calls}


def run(cfg: Config) -> dict:
    torch.set_num_threads(cfg.threads)
    model = build_model(cfg)
    policy = CausalLMPolicy(model, cfg.prompt, cfg.max_new_tokens, max_support=10**7)
    counter = PositionCounter(model)
    (tree_seqs, tree_lp), tree = timed(
        lambda: policy.enumerate(cfg.batch_size), counter, cfg.repeats, cfg.time_budget, "tree"
    )
    (naive_seqs, naive_lp), naive = timed(
        lambda: naive_enumerate(policy, cfg.batch_size), counter, cfg.repeats, cfg.time_budget, "naive"
    )
    counter.remove()
    if string_keys(tree_seqs) != naive_seqs:
        raise RuntimeError("the two methods enumerate different strings")
    return {
        "config": asdict(cfg),
        "torch": torch.__version__,
        "support_size": len(tree_seqs),
        "logsumexp": tree_lp.logsumexp(0).item(),
        "max_abs_log_prob_diff": (tree_lp - naive_lp).abs().max().item(),
        "tree": tree,
        "naive": naive,
        "speedup": naive["seconds"] / tree["seconds"],
        "positions_ratio": naive["positions"] / tree["positions"],
    }


def print_table(result: dict) -> None:
    cfg = result["config"]
    print(
        f"V={cfg['vocab_size']} L={cfg['max_new_tokens']} prompt={len(cfg['prompt'])} tokens, "
        f"{cfg['dtype']}, {cfg['threads']} thread(s), batch {cfg['batch_size']}: "
        f"{result['support_size']} continuations"
    )
    print(f"{'method':<8}{'positions':>12}{'fwd calls':>11}{'seconds':>10}")
    for name in ("tree", "naive"):
        r = result[name]
        print(f"{name:<8}{r['positions']:>12}{r['forward_calls']:>11}{r['seconds']:>10.3f}")
    print(
        f"speedup {result['speedup']:.1f}x, positions ratio {result['positions_ratio']:.1f}x, "
        f"max |log-prob diff| {result['max_abs_log_prob_diff']:.1e}, logsumexp {result['logsumexp']:.1e}"
    )


def parse_args(argv: list[str] | None = None) -> Config:
    """The command line as a :class:`Config`; bad values exit 2 with an argparse message."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if build_parser(Config).parse_known_args(argv)[0].smoke:
        argv = SMOKE_ARGV + argv  # later options win
    return parse_config(Config, argv, prog="enumerate_speed.py")


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_args(argv)
    result = run(cfg)
    print_table(result)
    if cfg.out is not None:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        cfg.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
