"""Build ``models/review_lm/``: the reference language model of the vBoN sentiment experiment.

A deterministic recipe, CPU only, a few minutes on two cores:

1. sample a corpus of short movie reviews ("the movie was not very good <eos>") from
   a small hand-written probabilistic grammar, of both sentiments in about equal
   measure, over a 23-token vocabulary (EOS and UNK included);
2. build a word-level tokenizer (``tokenizers`` WordLevel + WhitespaceSplit) wrapped
   in ``transformers.PreTrainedTokenizerFast``;
3. train a tiny ``GPT2LMHeadModel`` (2 layers, 2 heads, width 64) on it;
4. save model, tokenizer, ``prompts.json`` and ``training_summary.json``, where the
   summary holds the held-out perplexity (with the grammar's own perplexity as the
   floor it can reach) and, for every prompt, the exact distribution of VADER
   rewards over all continuations of at most ``max_new_tokens`` tokens.

Run from anywhere::

    python models/build_review_lm.py [--out DIR] [--steps N] [--seed S] [--force]

An existing output directory is never overwritten without ``--force``. The model
card is ``models/README.md``; its numbers come from ``training_summary.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # the recipe scores rewards with the package's own VADER
    sys.path.insert(0, str(REPO_ROOT))

from bonmath.sentiment import continuation_rewards  # noqa: E402

# ---------------------------------------------------------------------------
# The grammar. Every sentence is  "the SUBJECT VERB" + continuation + EOS.
# ---------------------------------------------------------------------------

EOS = "<eos>"  # also the padding token: one special token fewer to enumerate
UNK = "<unk>"
SUBJECTS = ("movie", "film", "acting", "plot")
VERBS = ("was", "is")
POSITIVE = ("good", "great", "fun", "fine")
NEGATIVE = ("bad", "awful", "boring", "dull")
INTENSIFIERS = ("very", "really", "so")
NEGATION = "not"
CONJUNCTIONS = ("and", "but")
VOCABULARY = (
    (EOS, UNK, "the")
    + SUBJECTS
    + VERBS
    + (NEGATION,)
    + INTENSIFIERS
    + CONJUNCTIONS
    + POSITIVE
    + NEGATIVE
)

# Probability that the review of a subject is positive overall; the mean is 1/2.
P_POSITIVE = {"movie": 0.5, "film": 0.5, "acting": 0.6, "plot": 0.4}
# Shape of the continuation: one clause; two joined by and/but; or the second about
# another subject ("good but the plot was dull").
P_FORM = {"single": 0.6, "pair": 0.25, "pair_with_subject": 0.15}
P_AND = 0.6  # "and" joins clauses of the same polarity, "but" opposite ones
P_NEGATED = 0.2  # "not" before a clause flips the polarity of its adjective
P_INTENSIFIED = 0.4  # one of INTENSIFIERS, uniformly

PROMPTS = (
    "the movie was",
    "the film is",
    "the acting was",
    "the plot is",
    "the film was",
    "the movie",
)


def sample_review(rng: np.random.Generator) -> tuple[list[str], list[str], float]:
    """Draw one review from the grammar.

    Returns ``(opening, continuation, log_prob)``: the words of the opening, the words
    of the continuation (ending with EOS) and the exact log-probability of the
    continuation given the opening. The grammar is unambiguous (each string has one
    derivation: the conjunction fixes the clause polarities, the adjective and the
    negation fix the polarity of a clause), so the log-probability of the derivation
    is that of the string.
    """
    log_prob = 0.0

    def choose(options, probs=None):
        nonlocal log_prob
        probs = [1 / len(options)] * len(options) if probs is None else probs
        u, i = rng.random(), 0
        while i < len(options) - 1 and u >= probs[i]:
            u -= probs[i]
            i += 1
        log_prob += math.log(probs[i])
        return options[i]

    def clause(positive: bool) -> list[str]:
        words = []
        negated = choose((True, False), (P_NEGATED, 1 - P_NEGATED))
        if negated:
            words.append(NEGATION)
        if choose((True, False), (P_INTENSIFIED, 1 - P_INTENSIFIED)):
            words.append(choose(INTENSIFIERS))
        words.append(choose(POSITIVE if positive != negated else NEGATIVE))
        return words

    subject, verb = SUBJECTS[rng.integers(len(SUBJECTS))], VERBS[rng.integers(len(VERBS))]
    opening = ["the", subject, verb]  # given: only the continuation's choices are scored
    p = P_POSITIVE[subject]
    positive = choose((True, False), (p, 1 - p))
    form = choose(tuple(P_FORM), tuple(P_FORM.values()))
    if form == "single":
        words = clause(positive)
    else:
        conjunction = choose(CONJUNCTIONS, (P_AND, 1 - P_AND))
        first = clause(positive if conjunction == "and" else not positive)
        middle = [conjunction]
        if form == "pair_with_subject":
            other = choose(tuple(s for s in SUBJECTS if s != subject))
            middle += ["the", other, verb]
        words = first + middle + clause(positive)
    return opening, words + [EOS], log_prob


def sample_corpus(n: int, rng: np.random.Generator):
    """``n`` reviews: lists of openings and continuations, and an array of log-probs."""
    openings, continuations, log_probs = [], [], np.empty(n)
    for i in range(n):
        opening, continuation, log_probs[i] = sample_review(rng)
        openings.append(opening)
        continuations.append(continuation)
    return openings, continuations, log_probs


# ---------------------------------------------------------------------------
# Tokenizer and model
# ---------------------------------------------------------------------------


def build_tokenizer(max_length: int):
    """Word-level tokenizer over :data:`VOCABULARY`; EOS doubles as padding."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCABULARY)}, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=UNK,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
    )


def encode_corpus(tokenizer, openings, continuations, length: int):
    """Token ids ``(n, length)`` padded with EOS, LM labels (-100 on padding) and the
    index of each continuation's first token."""
    eos = tokenizer.eos_token_id
    ids = torch.full((len(openings), length), eos, dtype=torch.long)
    labels = torch.full((len(openings), length), -100, dtype=torch.long)
    starts = torch.empty(len(openings), dtype=torch.long)
    vocab = tokenizer.get_vocab()
    for i, (opening, continuation) in enumerate(zip(openings, continuations, strict=True)):
        tokens = [vocab[w] for w in opening + continuation]
        if len(tokens) > length:
            raise ValueError(f"review {' '.join(opening + continuation)!r} exceeds {length} tokens")
        ids[i, : len(tokens)] = torch.tensor(tokens)
        labels[i, : len(tokens)] = ids[i, : len(tokens)]
        starts[i] = len(opening)
    return ids, labels, starts


@torch.no_grad()
def continuation_log_probs(model, ids, labels, starts, batch_size: int = 2048) -> torch.Tensor:
    """Per-review log-probability of the continuation (EOS included) given the opening,
    in float64; and the number of continuation tokens as the second output."""
    total, n_tokens = [], []
    positions = torch.arange(ids.shape[1])
    for lo in range(0, len(ids), batch_size):
        x, y, s = (
            ids[lo : lo + batch_size],
            labels[lo : lo + batch_size],
            starts[lo : lo + batch_size],
        )
        logits = model(x, attention_mask=(y != -100).long()).logits.to(torch.float64)
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
        target = y[:, 1:]
        scored = (target != -100) & (positions[1:][None, :] >= s[:, None])
        token_lp = log_probs.gather(-1, target.clamp(min=0)[..., None])[..., 0]
        total.append(torch.where(scored, token_lp, 0.0).sum(-1))
        n_tokens.append(scored.sum(-1))
    return torch.cat(total), torch.cat(n_tokens)


# ---------------------------------------------------------------------------
# Exact enumeration of continuations (the card's reward distributions)
# ---------------------------------------------------------------------------


@torch.no_grad()
def enumerate_continuations(
    model, prompt_ids, eos_id: int, max_new_tokens: int = 4, batch_size: int = 8192
):
    """Every continuation of ``prompt_ids`` with its exact log-probability under ``model``.

    Depth by depth: at depth ``d`` all unfinished prefixes have ``d - 1`` tokens, so
    they form one rectangular batch. A continuation ends at EOS (kept as its last
    token) or after ``max_new_tokens`` tokens. Returns a list of token-id tuples and
    a float64 array of log-probabilities that sums (in probability) to one. A simple
    local version; the library's own enumeration lives in the package.
    """
    vocab_size = model.config.vocab_size
    others = torch.tensor([v for v in range(vocab_size) if v != eos_id])
    prompt = torch.as_tensor(prompt_ids, dtype=torch.long)[None, :]
    prefixes = torch.empty((1, 0), dtype=torch.long)
    prefix_lp = torch.zeros(1, dtype=torch.float64)
    finished, finished_lp = [], []
    for _ in range(max_new_tokens):
        step_lp = []
        for lo in range(0, len(prefixes), batch_size):
            batch = prefixes[lo : lo + batch_size]
            x = torch.cat([prompt.expand(len(batch), -1), batch], dim=1)
            step_lp.append(torch.log_softmax(model(x).logits[:, -1].to(torch.float64), dim=-1))
        lp = prefix_lp[:, None] + torch.cat(step_lp)
        finished.append(torch.cat([prefixes, torch.full((len(prefixes), 1), eos_id)], dim=1))
        finished_lp.append(lp[:, eos_id])
        n = len(prefixes)
        prefixes = torch.cat(
            [prefixes.repeat_interleave(len(others), 0), others.repeat(n)[:, None]], dim=1
        )
        prefix_lp = lp[:, others].reshape(-1)
    finished.append(prefixes)  # the continuations cut off at max_new_tokens
    finished_lp.append(prefix_lp)
    continuations = [tuple(row) for block in finished for row in block.tolist()]
    log_probs = torch.cat(finished_lp).numpy()
    total = float(torch.logsumexp(torch.as_tensor(log_probs), 0))
    if abs(total) > 1e-10:
        raise RuntimeError(f"enumerated probabilities do not sum to 1: log total = {total:.3g}")
    return continuations, log_probs


def reward_distribution(model, tokenizer, prompt: str, max_new_tokens: int, cache_dir=None) -> dict:
    """Summary of the exact reward distribution of ``prompt``'s continuations."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    continuations, log_probs = enumerate_continuations(
        model, prompt_ids, tokenizer.eos_token_id, max_new_tokens
    )
    rewards = continuation_rewards(tokenizer, prompt, continuations, cache_dir=cache_dir)
    p = np.exp(log_probs)
    p /= p.sum()
    top = np.argsort(-log_probs, kind="stable")[:8]
    return {
        "prompt": prompt,
        "n_strings": len(continuations),
        "n_reward_levels": int(np.unique(rewards).size),
        "mean_reward": float(p @ rewards),
        "std_reward": float(np.sqrt(p @ (rewards - p @ rewards) ** 2)),
        "p_positive": float(p[rewards > 0].sum()),
        "p_negative": float(p[rewards < 0].sum()),
        "p_zero": float(p[rewards == 0].sum()),
        "fraction_strings_positive": float(np.mean(rewards > 0)),
        "fraction_strings_negative": float(np.mean(rewards < 0)),
        "min_reward": float(rewards.min()),
        "max_reward": float(rewards.max()),
        "p_max_reward": float(p[rewards == rewards.max()].sum()),
        "p_ends_with_eos": float(
            sum(p[i] for i, c in enumerate(continuations) if c and c[-1] == tokenizer.eos_token_id)
        ),
        "top_continuations": [
            {
                "text": tokenizer.decode(list(continuations[i])),
                "prob": float(p[i]),
                "reward": float(rewards[i]),
            }
            for i in top
        ],
    }


# ---------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------


@dataclass
class RecipeConfig:
    """Settings of the recipe; each field is a command-line flag."""

    out: Path = field(
        default=REPO_ROOT / "models" / "review_lm",
        metadata={"help": "output directory"},
    )
    steps: int = field(default=3000, metadata={"help": "optimiser steps"})
    seed: int = field(default=0, metadata={"help": "seed of the corpus and of torch"})
    force: bool = field(default=False, metadata={"help": "replace an existing output directory"})
    batch_size: int = field(default=256, metadata={"help": "reviews per step"})
    lr: float = field(default=3e-3, metadata={"help": "peak AdamW learning rate"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up, then cosine decay"})
    n_train: int = field(default=60_000, metadata={"help": "training reviews"})
    n_heldout: int = field(default=5_000, metadata={"help": "held-out reviews (fresh draws)"})
    n_layer: int = field(default=2, metadata={"help": "transformer layers"})
    n_head: int = field(default=2, metadata={"help": "attention heads"})
    n_embd: int = field(default=64, metadata={"help": "model width"})
    n_positions: int = field(default=16, metadata={"help": "context length"})
    initializer_range: float = field(
        default=0.1,
        metadata={
            "help": "std of the initial weights. GPT-2's 0.02 leaves this tiny model on a "
            "plateau (held-out perplexity ~5.02) where 'and'/'but' do not yet relate the "
            "polarities of the two clauses, for 1000s of steps and seed-dependently; "
            "0.1 left it by step ~1300 on the seeds tried"
        },
    )
    plateau_tolerance: float = field(
        default=1.03,
        metadata={"help": "fail if held-out perplexity exceeds the grammar's by this factor"},
    )
    max_new_tokens: int = field(
        default=4, metadata={"help": "continuation length of the card's enumeration"}
    )
    threads: int = field(
        default=1,
        metadata={"help": "torch CPU threads (1 is reproducible and robust on a busy machine)"},
    )


def parse_args(argv=None) -> RecipeConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(RecipeConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float, "Path": Path}[str(f.type)]
            parser.add_argument(
                flag,
                type=kind,
                default=f.default,
                help=f"{f.metadata['help']} (default: {f.default})",
            )
    return RecipeConfig(**vars(parser.parse_args(argv)))


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse to touch an existing ``out`` without ``--force``, and with it unless ``out``
    is empty or holds a previous build (a ``training_summary.json``)."""
    if not out.exists():
        return
    if not force:
        raise SystemExit(f"error: {out} exists; pass --force to replace it")
    if not out.is_dir() or (any(out.iterdir()) and not (out / "training_summary.json").is_file()):
        raise SystemExit(
            f"error: {out} does not look like a build of this recipe; not replacing it"
        )


def lr_at(step: int, cfg: RecipeConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def versions() -> dict:
    from importlib.metadata import version

    import tokenizers
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "vaderSentiment": version("vaderSentiment"),
    }


def build(cfg: RecipeConfig) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    out = Path(cfg.out).resolve()
    check_output_dir(out, cfg.force)
    t_start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    # 1. corpus
    train_open, train_cont, _ = sample_corpus(cfg.n_train, rng)
    held_open, held_cont, held_grammar_lp = sample_corpus(cfg.n_heldout, rng)
    train_strings = {" ".join(o + c) for o, c in zip(train_open, train_cont, strict=True)}
    held_strings = [" ".join(o + c) for o, c in zip(held_open, held_cont, strict=True)]

    # 2. tokenizer
    tokenizer = build_tokenizer(cfg.n_positions)
    train_ids, train_labels, _ = encode_corpus(tokenizer, train_open, train_cont, cfg.n_positions)
    held_ids, held_labels, held_starts = encode_corpus(
        tokenizer, held_open, held_cont, cfg.n_positions
    )

    # 3. model
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=cfg.initializer_range,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    batches = torch.Generator().manual_seed(cfg.seed)
    model.train()
    t_train = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="training", unit="step", mininterval=1.0)
    running = None
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        idx = torch.randint(len(train_ids), (cfg.batch_size,), generator=batches)
        labels = train_labels[idx]
        logits = model(train_ids[idx], attention_mask=(labels != -100).long()).logits
        loss = torch.nn.functional.cross_entropy(  # next-token loss, padding ignored
            logits[:, :-1].reshape(-1, logits.shape[-1]),
            labels[:, 1:].reshape(-1),
            ignore_index=-100,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{running:.3f}")
    train_seconds = time.perf_counter() - t_train
    model.eval()

    # held-out perplexity of continuations given their openings, in float64
    model64 = model.to(torch.float64)
    held_lp, held_n = continuation_log_probs(model64, held_ids, held_labels, held_starts)
    n_tokens = int(held_n.sum())
    summary_ppl = {
        "heldout_continuation_perplexity": math.exp(-float(held_lp.sum()) / n_tokens),
        "grammar_continuation_perplexity": math.exp(-float(held_grammar_lp.sum()) / n_tokens),
        "heldout_continuation_tokens": n_tokens,
        "final_train_loss_ema": running,
    }
    ratio = (
        summary_ppl["heldout_continuation_perplexity"]
        / summary_ppl["grammar_continuation_perplexity"]
    )
    if ratio > cfg.plateau_tolerance:
        raise SystemExit(
            f"error: held-out perplexity {summary_ppl['heldout_continuation_perplexity']:.4f} is "
            f"{ratio:.3f} times the grammar's {summary_ppl['grammar_continuation_perplexity']:.4f} "
            f"(tolerance {cfg.plateau_tolerance}); the model has not learned the grammar: "
            "try more --steps or another --seed. Nothing was written."
        )

    # 4. save (into a scratch directory first, so a failed run leaves nothing behind)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".review_lm-", dir=out.parent))
    try:
        model.to(torch.float32).save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        # "PreTrainedTokenizerFast" loads under transformers 4.x and 5.x alike
        tok_cfg_path = scratch / "tokenizer_config.json"
        tok_cfg = json.loads(tok_cfg_path.read_text())
        tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
        (scratch / "prompts.json").write_text(json.dumps(list(PROMPTS), indent=2) + "\n")

        # the card's reward distributions, on the float64 model
        model64 = model.to(torch.float64)
        distributions = [
            reward_distribution(model64, tokenizer, prompt, cfg.max_new_tokens)
            for prompt in tqdm(PROMPTS, desc="enumerating", unit="prompt")
        ]
        size = sum(f.stat().st_size for f in scratch.iterdir())
        summary = {
            "seed": cfg.seed,
            "config": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(cfg).items()
                if k not in ("out", "force")
            },
            "corpus": {
                "n_train": cfg.n_train,
                "n_heldout": cfg.n_heldout,
                "distinct_train_reviews": len(train_strings),
                "heldout_fraction_unseen_in_train": float(
                    np.mean([s not in train_strings for s in held_strings])
                ),
                "vocabulary": list(VOCABULARY),
                "vocab_size": len(tokenizer),
            },
            "model": {
                "parameters": sum(p.numel() for p in model.parameters()),
                "size_on_disk_bytes": size,
                "saved_dtype": "float32",
            },
            **summary_ppl,
            "train_seconds": train_seconds,
            "torch_threads": torch.get_num_threads(),
            "prompts": list(PROMPTS),
            "max_new_tokens": cfg.max_new_tokens,
            "reward": "VADER compound (bonmath.sentiment.vader_reward, 4 decimals)",
            "reward_distributions": distributions,
            "versions": versions(),
        }
        summary["total_seconds"] = time.perf_counter() - t_start
        (scratch / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        scratch.chmod(0o777 & ~umask)  # mkdtemp (and safetensors) create owner-only files
        for f in scratch.iterdir():
            f.chmod(0o666 & ~umask)
        if out.exists():  # check_output_dir allowed it: --force on an earlier build
            shutil.rmtree(out)
        scratch.rename(out)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)
    return summary


def card_table(summary: dict) -> str:
    """The reward-distribution table of ``models/README.md`` (markdown)."""
    rows = [
        "| prompt | strings | reward levels | mean reward | P(r>0) | P(r<0) | P(r=0) | P(ends at EOS) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d in summary["reward_distributions"]:
        rows.append(
            f"| {d['prompt']} | {d['n_strings']:,} | {d['n_reward_levels']:,} | "
            f"{d['mean_reward']:+.4f} | {d['p_positive']:.3f} | {d['p_negative']:.3f} | "
            f"{d['p_zero']:.3f} | {d['p_ends_with_eos']:.3f} |"
        )
    return "\n".join(rows)


def main(argv=None) -> None:
    cfg = parse_args(argv)
    summary = build(cfg)
    print(
        f"wrote {Path(cfg.out).resolve()} in {summary['total_seconds']:.0f} s "
        f"(training {summary['train_seconds']:.0f} s)"
    )
    print(
        f"held-out continuation perplexity {summary['heldout_continuation_perplexity']:.4f} "
        f"(grammar {summary['grammar_continuation_perplexity']:.4f})"
    )
    print(card_table(summary))


if __name__ == "__main__":
    main()
