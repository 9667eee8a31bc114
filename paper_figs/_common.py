"""Shared plumbing of the figure scripts: options, the cached experiment, styles, output.

Each figure module ``paper_figs/fig_<name>.py`` writes ``<name>.png`` and
``<name>.json`` (every plotted number) to ``--out``. Its options are a
:class:`FigureConfig` parsed by :func:`bonmath.cli.parse_config` (invalid values exit
2). The experiment figures share one :func:`bonmath.experiment.run_experiment`,
cached under ``--cache`` (default ``<out>/cache``, never inside this package), so
only the first figure trains.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bonmath.cli import build_parser, option, parse_config, plain_text

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path("paper_figs") / "out"
"""Default ``--out``, relative to the working directory (a clone's root)."""
DEFAULT_CACHE = DEFAULT_OUT / "cache"
"""The cache under the default ``--out``; scripts should use :func:`cache_dir`."""

C = TypeVar("C")


@dataclass
class FigureConfig:
    """Options of every figure script."""

    out: Path = option("output directory (relative to the working directory)", DEFAULT_OUT)
    smoke: bool = option("tiny configuration, seconds; the figures say SMOKE in their titles", False)
    cache: Path | None = option("cache of rewards, trained models and results (None: <out>/cache)", None)
    threads: int = option("torch intra-op threads (1 is fastest here)", 1, minimum=1)
    progress: bool = option("tqdm progress bars", True)


def parse(config_cls: type[C], argv: list[str] | None, doc: str | None) -> C:
    """``config_cls`` from the command line, with the script docstring's first line as description."""
    return parse_config(config_cls, argv, description=plain_text((doc or "").splitlines()[0]))


def parser(description: str) -> argparse.ArgumentParser:
    """An argparse parser of :class:`FigureConfig`, for scripts that add their own options."""
    return build_parser(FigureConfig, description=description)


def cache_dir(cfg: Any) -> Path:
    return Path(cfg.cache) if cfg.cache is not None else Path(cfg.out) / "cache"


def experiment_config(cfg: FigureConfig):
    from bonmath.experiment import SMOKE, ExperimentConfig

    return SMOKE if cfg.smoke else ExperimentConfig()


def experiment(cfg: FigureConfig):
    """The experiment's :class:`~bonmath.experiment.ExperimentResults` (trained once, then cached)."""
    import torch

    from bonmath.experiment import run_experiment

    torch.set_num_threads(cfg.threads)
    return run_experiment(experiment_config(cfg), cache_dir(cfg), progress=cfg.progress)


# --------------------------------------------------------------------------- styles

SERIES_STYLE = {
    "vbon": dict(color="tab:blue", marker="o", label="vBoN (exact J)"),
    "vbon_bound_exactF": dict(color="tab:orange", marker="s", label="vBoN bound L, exact F"),
    "kl_rl": dict(color="tab:red", marker="D", label="KL-RL (RLOO)"),
    "bon_sft": dict(color="tab:purple", marker="P", label="BoN-SFT"),
}
_ESTIMATED_F_STYLES = [dict(color="tab:green", marker="^"), dict(color="tab:olive", marker="v"),
                       dict(color="tab:cyan", marker="<"), dict(color="tab:brown", marker=">")]


def style(series: str, all_series: list[str] | None = None) -> dict:
    """Matplotlib style of a trained series; ``vbon_bound_M<m>`` is labelled "F̂ (M=<m>)" for any M,
    coloured by its rank among the M values in ``all_series``, so smoke and full runs share labels."""
    if series in SERIES_STYLE:
        return dict(SERIES_STYLE[series])
    if series.startswith("vbon_bound_M"):
        ms = sorted(int(s.removeprefix("vbon_bound_M")) for s in (all_series or [series])
                    if s.startswith("vbon_bound_M"))
        rank = ms.index(int(series.removeprefix("vbon_bound_M")))
        return dict(_ESTIMATED_F_STYLES[rank % len(_ESTIMATED_F_STYLES)],
                    label=f"vBoN bound L, F̂ (M={ms[rank]})")
    raise ValueError(f"no style for series {series!r}")


# --------------------------------------------------------------------------- output


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


def save(fig, data: dict, out: str | Path, name: str, smoke: bool | None = None) -> tuple[Path, Path]:
    """Write ``<name>.png`` and ``<name>.json`` (finite numbers only) to ``out``.

    With ``smoke=True`` the figure gets a "SMOKE" super-title and the JSON ``"smoke": true``.
    """
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png, js = out / f"{name}.png", out / f"{name}.json"
    if smoke is not None:
        data = {"smoke": smoke, **data}
        if smoke:
            fig.suptitle("SMOKE run (tiny configuration): not the paper's numbers", color="tab:red")
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
