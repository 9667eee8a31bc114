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

import argparse
import itertools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from bonmath.enumeration import string_keys
from bonmath.hf import CausalLMPolicy


@dataclass
class Config:
    """What is benchmarked."""

    vocab_size: int = 16  # V; the last token is EOS
    max_new_tokens: int = 4  # L
    prompt: tuple[int, ...] = (1, 2, 3)
    n_embd: int = 32
    n_layer: int = 2
    n_head: int = 2
    dtype: str = "float64"  # "float64" or "float32"
    batch_size: int = 1024  # prefixes / strings per forward call, both methods
    repeats: int = 3  # wall time is the best of up to this many runs ...
    time_budget: float = 5.0  # ... started while a method's total time is below this (s)
    threads: int = 1  # torch intra-op threads
    seed: int = 0


SMOKE = Config(vocab_size=6, max_new_tokens=3, n_embd=16, repeats=1)


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


def timed(fn, counter: PositionCounter, repeats: int, time_budget: float):
    """Best wall time of up to ``repeats`` runs (a new run starts only while the
    total is under ``time_budget`` seconds); positions and calls of one run."""
    times: list[float] = []
    while len(times) < repeats and sum(times) < time_budget:
        counter.reset()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    stats = {"seconds": min(times), "all_seconds": times}
    return result, {**stats, "positions": counter.positions, "forward_calls": counter.calls}


def run(cfg: Config) -> dict:
    torch.set_num_threads(cfg.threads)
    model = build_model(cfg)
    policy = CausalLMPolicy(model, cfg.prompt, cfg.max_new_tokens, max_support=10**7)
    counter = PositionCounter(model)
    (tree_seqs, tree_lp), tree = timed(
        lambda: policy.enumerate(cfg.batch_size), counter, cfg.repeats, cfg.time_budget
    )
    (naive_seqs, naive_lp), naive = timed(
        lambda: naive_enumerate(policy, cfg.batch_size), counter, cfg.repeats, cfg.time_budget
    )
    counter.remove()
    assert string_keys(tree_seqs) == naive_seqs, "the two methods enumerate different strings"
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny fast version (V=6, L=3)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--dtype", choices=["float64", "float32"], default="float64", help="model dtype"
    )
    parser.add_argument(
        "--batch-size", type=int, default=Config.batch_size, help="forward batch size"
    )
    parser.add_argument(
        "--threads", type=int, default=Config.threads, help="torch intra-op threads"
    )
    args = parser.parse_args(argv)
    base = SMOKE if args.smoke else Config()
    cfg = Config(
        **{
            **asdict(base),
            "dtype": args.dtype,
            "batch_size": args.batch_size,
            "threads": args.threads,
        }
    )
    result = run(cfg)
    print_table(result)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
