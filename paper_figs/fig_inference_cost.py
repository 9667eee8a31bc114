"""Figure 5: inference cost of BoN at N against one sample of the vBoN model, measured.

    python -m paper_figs.fig_inference_cost [--out paper_figs/out] [--smoke]

The vBoN paper's claim: vBoN needs one generation where BoN needs N generations
and N reward calls, a factor N. Measured here with the real models on CPU (one
torch thread): BoN draws N continuations from the reference review LM
(``CausalLMPolicy.sample``), decodes them and scores them with VADER
(``bonmath.sentiment.continuation_rewards``, uncached), and keeps the best; vBoN
draws one continuation from the trained vBoN model (the experiment's vBoN model at
the largest N, from the cache) and decodes it. Two regimes:

- latency: one output at a time (BoN's N draws are one batched call);
- throughput: ``--batch`` outputs per call for both (BoN samples batch x N).

Outputs per second are the batch size over the median wall time of a call.
Writes ``inference_cost.png`` and ``inference_cost.json``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from bonmath.cli import option
from paper_figs import _common

NAME = "inference_cost"


def _median_seconds(call, reps: int, min_seconds: float) -> tuple[float, int]:
    """Median wall time of ``call()`` over at least ``reps`` calls and ``min_seconds`` in total."""
    call()  # warm-up
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < reps or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        if len(times) >= 50 * reps:
            break
    return statistics.median(times), len(times)


def measure(ref_policy, vbon_policy, tokenizer, prompt: str, ns, batch: int, reps: int, min_seconds: float,
            seed: int = 0) -> dict:
    import numpy as np
    import torch

    from bonmath.sentiment import continuation_rewards

    generator = torch.Generator().manual_seed(seed)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def vbon_call():
        seqs = vbon_policy.sample(batch, generator)
        tokenizer.batch_decode([prompt_ids + list(s) for s in seqs])

    def bon_call(n):
        def call():
            seqs = ref_policy.sample(batch * n, generator)
            rewards = continuation_rewards(tokenizer, prompt, seqs).reshape(batch, n)
            best = rewards.argmax(axis=1)
            return [seqs[i * n + j] for i, j in enumerate(best)]
        return call

    seconds, calls = _median_seconds(vbon_call, reps, min_seconds)
    vbon = {"outputs_per_second": batch / seconds, "seconds_per_call": seconds, "calls": calls}
    rows = []
    for n in ns:
        s, c = _median_seconds(bon_call(n), reps, min_seconds)
        rows.append({"n": n, "bon_outputs_per_second": batch / s, "bon_seconds_per_call": s, "calls": c,
                     "speedup_vbon_over_bon": s / seconds})
    # what share of BoN's time is the reward (decode + VADER), at the largest N
    n = max(ns)
    seqs = ref_policy.sample(batch * n, generator)
    s_reward, _ = _median_seconds(lambda: continuation_rewards(tokenizer, prompt, seqs), reps, min_seconds / 2)
    s_sample, _ = _median_seconds(lambda: ref_policy.sample(batch * n, generator), reps, min_seconds / 2)
    return {"batch": batch, "vbon": vbon, "bon": rows,
            "at_max_n": {"n": n, "sample_seconds": s_sample, "reward_seconds": s_reward,
                         "mean_length": float(np.mean([len(q) for q in seqs]))}}


MAX_SAMPLES_PER_CALL = 1 << 16
"""Largest batch x N drawn in one BoN call (the largest N of the grid is 128)."""


@dataclass
class InferenceCostConfig(_common.FigureConfig):
    """Options of the inference-cost figure."""

    batch: int | None = option("outputs per call in the throughput regime (None: 4 with --smoke, else 64)",
                               None, minimum=1)

    def __post_init__(self) -> None:
        if self.batch is not None and self.batch * 128 > MAX_SAMPLES_PER_CALL:
            raise ValueError(f"--batch {self.batch} would draw {self.batch * 128:,} continuations per BoN call "
                             f"at N = 128, more than {MAX_SAMPLES_PER_CALL:,}")


def main(argv: list[str] | None = None) -> int:
    cfg = _common.parse(InferenceCostConfig, argv, __doc__)
    import torch

    from bonmath.experiment import training_configs
    from bonmath.sentiment import review_task
    from bonmath.train import VBoNConfig, train_cached

    results = _common.experiment(cfg)  # makes sure the vBoN model is trained and cached
    exp_cfg = _common.experiment_config(cfg)
    cache = _common.cache_dir(cfg)
    torch.set_num_threads(cfg.threads)
    task = review_task(exp_cfg.prompts, exp_cfg.max_new_tokens, reward_cache_dir=cache / "rewards")
    vbon_cfg = max((c for c in training_configs(exp_cfg) if isinstance(c, VBoNConfig)), key=lambda c: c.n)
    trained = train_cached(task, vbon_cfg, cache / "models", progress=cfg.progress)
    vbon_model = task.model.__class__(task.model.config)
    vbon_model.load_state_dict(trained.state_dict())
    ref_model = task.model.to(torch.float32).eval()
    vbon_model = vbon_model.to(torch.float32).eval()
    ns = exp_cfg.ns
    batch = cfg.batch or (4 if cfg.smoke else 64)
    reps, min_seconds = (2, 0.0) if cfg.smoke else (5, 1.0)
    prompt = task.prompt_texts[0]
    regimes = {}
    for regime, b in (("latency", 1), ("throughput", batch)):
        regimes[regime] = measure(task.policy(ref_model, 0), task.policy(vbon_model, 0), task.tokenizer,
                                  prompt, ns, b, reps, min_seconds)
    data = {"prompt": prompt, "max_new_tokens": exp_cfg.max_new_tokens, "vbon_model": vbon_cfg.label,
            "threads": torch.get_num_threads(), "dtype": "float32", "regimes": regimes,
            "vbon_model_kl_ref": next(t.metrics.kl_ref for t in results.trained if t.label == vbon_cfg.label)}

    plt = _common.pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    for (regime, r), color in zip(regimes.items(), ("tab:blue", "tab:red")):
        n = [row["n"] for row in r["bon"]]
        ax.plot(n, [row["bon_outputs_per_second"] for row in r["bon"]], marker="o", color=color,
                label=f"BoN, {regime} (batch {r['batch']})")
        ax.axhline(r["vbon"]["outputs_per_second"], color=color, ls="--", label=f"vBoN, {regime}")
        ax2.plot(n, [row["speedup_vbon_over_bon"] for row in r["bon"]], marker="o", color=color,
                 label=f"{regime} (batch {r['batch']})")
    n = list(ns)
    ax2.plot(n, n, color="black", lw=0.8, label="factor N (the paper's claim)")
    for a in (ax, ax2):
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.set_xlabel("N")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    ax.set_ylabel("outputs per second (measured)")
    ax.set_title("Throughput of BoN vs one vBoN sample")
    ax2.set_ylabel("vBoN speed-up over BoN")
    ax2.set_title("Measured speed-up vs N")
    _common.save(fig, data, cfg.out, NAME, smoke=cfg.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
