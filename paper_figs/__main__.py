"""``python -m paper_figs [--smoke] [--out DIR] [--only NAME ...]``: regenerate every figure.

Figure modules are discovered as ``paper_figs/fig_*.py``; each is run in this
process with the same ``--out``, ``--cache``, ``--threads`` and ``--smoke``. The
sentiment-experiment figures share one trained and evaluated experiment, cached
under ``<out>/cache`` (or ``--cache``), so a rerun retrains nothing. A figure that
fails is reported and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from bonmath.cli import option, parse_config
from paper_figs._common import FigureConfig

HERE = Path(__file__).resolve().parent

# The experiment figures first: the first one trains, the others read the cache.
FIRST = ("fig_reward_vs_kl", "fig_win_rate_vs_kl", "fig_vbon_bound_gap", "fig_bon_kl_bound")


def figure_modules() -> list[str]:
    """Names of every ``paper_figs/fig_*.py`` module, experiment figures first."""
    names = sorted(p.stem for p in HERE.glob("fig_*.py"))
    return [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]


@dataclass
class FiguresConfig(FigureConfig):
    """Regenerate the paper's figures."""

    only: tuple[str, ...] | None = option(
        "draw only these figures, named as their outputs (reward_vs_kl, win_rate_vs_kl, ...) or modules "
        "(fig_reward_vs_kl)", None)

    def __post_init__(self) -> None:
        if self.only is None:
            return
        valid = figure_modules()
        modules = [name if name.startswith("fig_") else f"fig_{name}" for name in self.only]
        unknown = [name for name, module in zip(self.only, modules) if module not in valid]
        if unknown:
            listed = ", ".join(n.removeprefix("fig_") for n in valid)
            raise ValueError(f"--only: unknown figure(s) {', '.join(unknown)}; the figures are {listed}")
        self.only = tuple(dict.fromkeys(modules))


def figure_argv(cfg: FigureConfig) -> list[str]:
    """The command line that passes ``cfg``'s shared options on to one figure script."""
    argv = ["--out", str(cfg.out), "--threads", str(cfg.threads)]
    if cfg.cache is not None:
        argv += ["--cache", str(cfg.cache)]
    return argv + (["--smoke"] if cfg.smoke else []) + ([] if cfg.progress else ["--no-progress"])


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(FiguresConfig, argv, prog="python -m paper_figs")
    names = figure_modules() if cfg.only is None else list(cfg.only)
    timings, failed = {}, []
    for name in names:
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            module = importlib.import_module(f"paper_figs.{name}")
            status = module.main(figure_argv(cfg))
            if status not in (0, None):
                failed.append(name)
        except (Exception, SystemExit):  # report (an argparse error too) and go on with the other figures
            traceback.print_exc()
            failed.append(name)
        timings[name] = time.perf_counter() - started
        print(f"== {name}: {timings[name]:.1f} s", flush=True)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "timings.json").write_text(json.dumps({"smoke": cfg.smoke, "seconds": timings, "failed": failed}, indent=1))
    print(f"total {sum(timings.values()):.1f} s; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
