"""``python -m paper_figs [--smoke] [--out DIR]``: regenerate every figure.

Figure modules are discovered as ``paper_figs/fig_*.py``; each is run in this
process with ``--out`` (and ``--smoke``). The sentiment-experiment figures share
one trained and evaluated experiment, cached under ``paper_figs/cache/`` (smoke:
``<out>/cache``), so a rerun retrains nothing. A figure that fails is reported and
the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The experiment figures first: the first one trains, the others read the cache.
FIRST = ("fig_reward_vs_kl", "fig_win_rate_vs_kl", "fig_vbon_bound_gap", "fig_bon_kl_bound")


def figure_modules() -> list[str]:
    """Names of every ``paper_figs/fig_*.py`` module, experiment figures first."""
    names = sorted(p.stem for p in HERE.glob("fig_*.py"))
    return [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper_figs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(HERE / "out"), help="output directory (default paper_figs/out)")
    parser.add_argument("--smoke", action="store_true", help="reduced version of every figure (< 2 min)")
    parser.add_argument("--only", nargs="+", default=None, help="run only these figure modules")
    args = parser.parse_args(argv)
    names = figure_modules() if args.only is None else args.only
    timings, failed = {}, []
    for name in names:
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            module = importlib.import_module(f"paper_figs.{name}")
            module.main(["--out", args.out] + (["--smoke"] if args.smoke else []))
        except Exception:  # report and go on with the other figures
            traceback.print_exc()
            failed.append(name)
        timings[name] = time.perf_counter() - started
        print(f"== {name}: {timings[name]:.1f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "timings.json").write_text(json.dumps({"smoke": args.smoke, "seconds": timings, "failed": failed}, indent=1))
    print(f"total {sum(timings.values()):.1f} s; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
