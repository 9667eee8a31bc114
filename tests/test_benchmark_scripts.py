"""The benchmark scripts' command lines: bad values exit 2 with an argparse message, --smoke is a preset.

The scripts are imported as ``benchmarks.<name>`` (run pytest from the repository
root: ``python -m pytest``) and their ``main``/``parse_args`` called in-process.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json

import pytest

pytest.importorskip("torch")


def script(name: str):
    if name in ("enumerate_speed", "sentiment_seeds", "trl_step_time", "trl_positions"):
        pytest.importorskip("transformers")
    return importlib.import_module(f"benchmarks.{name}")


@pytest.mark.parametrize("name, argv, message", [
    ("estimator_variance", ["--reps", "0"], "argument --reps: must be >= 2; got '0'"),
    ("estimator_variance", ["--k", "4", "0"], "argument --k: must be >= 1; got '0'"),
    ("estimator_variance", ["--model", "gpt3"], "argument --model: invalid choice"),
    ("exact_scaling", ["--repeats", "0"], "argument --repeats: must be >= 1; got '0'"),
    ("exact_scaling", ["--sizes", "1e3", "2.5"], "sizes must be whole numbers; got 2.5"),
    ("enumerate_speed", ["--repeats", "0"], "argument --repeats: must be >= 1; got '0'"),
    ("enumerate_speed", ["--n-embd", "15"], "n_head=2 must divide n_embd=15"),
    ("sentiment_seeds", ["--k", "1"], "argument --k: must be >= 2; got '1'"),
    ("sentiment_seeds", ["--ns", "2", "8", "--trl-ns", "4"], "trl_ns (4,) must be a subset of ns (2, 8)"),
    ("trl_step_time", ["--timed", "0"], "argument --timed: must be >= 1; got '0'"),
])
def test_a_bad_value_exits_2_with_a_usage_message(capsys, name, argv, message):
    """argparse's convention: an invalid option value is a usage error (status 2), not a traceback."""
    with pytest.raises(SystemExit) as exit_info:
        script(name).main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("name, argv, message", [
    ("estimator_variance", ["--gpt2-vocab", "40"],
     "refusing a run this large: gpt2: 60880 strings, 7488 parameters: about 4.5e+02 GB and 1.2e+03 h "
     "(limits: max_memory_gb=8, max_minutes=30)"),
    ("exact_scaling", ["--sizes", "1e10"], "the largest support (1e+10 strings) needs about 1e+03 GB"),
    ("enumerate_speed", ["--vocab-size", "60", "--max-new-tokens", "6"], "42907784221 continuations"),
])
def test_a_run_too_large_is_refused_up_front_with_its_size(capsys, name, argv, message):
    """The size guard runs before anything is built and says what the size would be, and the limit."""
    with pytest.raises(SystemExit) as exit_info:
        script(name).main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_sentiment_seeds_refuses_more_models_to_train_than_its_limit(capsys):
    """The guard counts the models the cache lacks (after building the task, which the keys hash) and exits 2
    before training any."""
    with pytest.raises(SystemExit) as exit_info:
        script("sentiment_seeds").main(["--smoke", "--max-new-models", "0"])
    assert exit_info.value.code == 2
    assert "10 models to train, more than --max-new-models 0" in capsys.readouterr().err


def test_estimator_variance_smoke_is_the_library_preset_and_explicit_options_override_it():
    """--smoke gives bonmath.estimator_benchmark.SMOKE; an option given with it wins, before or after."""
    from bonmath.estimator_benchmark import SMOKE, EstimatorBenchmarkConfig

    module = script("estimator_variance")

    def benchmark_part(config):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(EstimatorBenchmarkConfig)}

    assert benchmark_part(module.parse_args(["--smoke"])) == dataclasses.asdict(SMOKE)
    for argv in (["--smoke", "--reps", "10"], ["--reps", "10", "--smoke"]):
        assert benchmark_part(module.parse_args(argv)) == dataclasses.asdict(dataclasses.replace(SMOKE, reps=10))
    assert module.parse_args([]).reps == EstimatorBenchmarkConfig().reps


@pytest.mark.parametrize("name, field, smoke_value, explicit", [
    ("exact_scaling", "samples", 2000, ["--samples", "50"]),
    ("enumerate_speed", "vocab_size", 6, ["--vocab-size", "5"]),
])
def test_other_scripts_smoke_presets_yield_to_explicit_options(name, field, smoke_value, explicit):
    module = script(name)
    assert getattr(module.parse_args(["--smoke"]), field) == smoke_value
    assert getattr(module.parse_args(["--smoke", *explicit]), field) == type(smoke_value)(explicit[1])


@pytest.mark.hf
@pytest.mark.slow
def test_estimator_variance_writes_json_csv_markdown_and_the_figure(tmp_path):
    """The script's outputs: the results JSON, one CSV line per row, the markdown tables and a PNG."""
    pytest.importorskip("transformers")
    pytest.importorskip("matplotlib")
    out, markdown, png = tmp_path / "ev.json", tmp_path / "ev.md", tmp_path / "ev.png"
    results = script("estimator_variance").main(
        ["--smoke", "--out", str(out), "--markdown", str(markdown), "--plot", str(png), "--no-progress"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert results["preset"] == "smoke"
    with open(out.with_suffix(".csv")) as handle:
        assert len(list(csv.DictReader(handle))) == len(results["rows"])
    from bonmath.estimator_benchmark import markdown_tables

    assert markdown.read_text() == markdown_tables(results)
    assert png.stat().st_size > 10_000


def test_trl_positions_smoke_trains_both_variants_per_seed_and_summarises_them(tmp_path):
    """One seed: TRL as is and with position ids from the mask both train from π_ref on all six
    prompts; the padded 2-token prompt makes their end points differ, and the summary is the runs'."""
    pytest.importorskip("trl")
    out = tmp_path / "positions.json"
    results = script("trl_positions").main(["--smoke", "--seeds", "0", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    runs = {run["keep_padded_positions"]: run for run in results["runs"]}
    assert sorted(runs) == [False, True] and all(run["history"][0]["exact/kl_ref"] == 0.0 for run in runs.values())
    assert runs[False]["end"] != runs[True]["end"]
    for keep, name in ((False, "position_ids_from_mask"), (True, "keep_padded_positions")):
        assert results["summary"][name]["kl_bon"]["values"] == [runs[keep]["end"]["kl_bon"]]
