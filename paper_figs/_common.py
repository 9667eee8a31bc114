"""Shared plumbing of the sentiment-experiment figures: arguments, the cached experiment, output.

Each figure module ``paper_figs/fig_<name>.py`` writes ``<name>.png`` and
``<name>.json`` (every plotted number) to ``--out``. The experiment figures share
one :func:`bonmath.experiment.run_experiment`, cached under ``--cache``, so only
the first figure trains.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "paper_figs" / "out"
DEFAULT_CACHE = ROOT / "paper_figs" / "cache"

SERIES_STYLE = {
    "vbon": dict(color="tab:blue", marker="o", label="vBoN (exact J)"),
    "vbon_bound_exactF": dict(color="tab:orange", marker="s", label="vBoN bound L, exact F"),
    "vbon_bound_M32": dict(color="tab:green", marker="^", label="vBoN bound L, F̂ (M=32)"),
    "vbon_bound_M300": dict(color="tab:olive", marker="v", label="vBoN bound L, F̂ (M=300)"),
    "kl_rl": dict(color="tab:red", marker="D", label="KL-RL (RLOO)"),
    "bon_sft": dict(color="tab:purple", marker="P", label="BoN-SFT"),
}


def style(series: str) -> dict:
    """Matplotlib style of a trained series (a fallback for unknown ones, e.g. other M)."""
    if series in SERIES_STYLE:
        return dict(SERIES_STYLE[series])
    return dict(color="tab:gray", marker="h", label=series.replace("_", " "))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output directory (default paper_figs/out)")
    p.add_argument("--smoke", action="store_true", help="tiny configuration, seconds")
    p.add_argument("--cache", default=None,
                   help="cache of rewards, trained models and results (default paper_figs/cache; "
                        "with --smoke: <out>/cache)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest here)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    return p


def cache_dir(args) -> Path:
    if args.cache is not None:
        return Path(args.cache)
    return Path(args.out) / "cache" if args.smoke else DEFAULT_CACHE


def experiment_config(args):
    from bonmath.experiment import SMOKE, ExperimentConfig

    return SMOKE if args.smoke else ExperimentConfig()


def experiment(args) -> dict[str, Any]:
    """The experiment's results (trained and evaluated once, then read from the cache)."""
    import torch

    from bonmath.experiment import run_experiment

    torch.set_num_threads(args.threads)
    return run_experiment(experiment_config(args), cache_dir(args), progress=not args.no_progress)


def _finite(value: Any, where: str = "") -> Any:
    """Check that every float is finite (None is allowed for 'not applicable')."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"non-finite number {value} at {where or 'top level'} of a figure JSON")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _finite(item, f"{where}[{i}]")
    return value


def save(fig, data: dict, out: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``<name>.png`` and ``<name>.json`` (finite numbers only) to ``out``."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png, js = out / f"{name}.png", out / f"{name}.json"
    js.write_text(json.dumps(_finite(data), indent=1, allow_nan=False, ensure_ascii=False))
    fig.tight_layout()
    fig.savefig(png, dpi=130, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {png} and {js}")
    return png, js


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
