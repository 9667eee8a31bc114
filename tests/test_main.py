"""``python -m bonmath``: options from a dataclass, errors exit 2, plain-text help, a size guard."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import RTOL_EXACT

import bonmath
from bonmath.__main__ import MAX_STRINGS, main, table, toy_task


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bonmath", *argv], capture_output=True, text=True)


@pytest.mark.parametrize("argv", [["--n", "0"], ["--vocab-size", "1"], ["--max-len", "x"]])
def test_invalid_values_exit_2_with_a_usage_line(argv):
    """An invalid value is an argparse error (status 2, usage on stderr), not a traceback."""
    result = run(*argv)
    assert result.returncode == 2
    assert "usage: python -m bonmath" in result.stderr and "Traceback" not in result.stderr


def test_help_is_plain_text():
    """--help shows the options with defaults and no reST markup."""
    result = run("--help")
    assert result.returncode == 0
    assert "--vocab-size" in result.stdout and "(default: 6)" in result.stdout
    assert "``" not in result.stdout and ":class:" not in result.stdout


def test_refuses_a_toy_lm_over_the_size_limit(capsys):
    """A toy LM with more than MAX_STRINGS strings is refused with its size in the message."""
    size = bonmath.tabular.num_sequences(50, 6)
    assert size > MAX_STRINGS
    with pytest.raises(SystemExit) as exit_info:
        main(["--vocab-size", "50", "--max-len", "6"])
    assert exit_info.value.code == 2
    assert f"{size:,} strings" in capsys.readouterr().err


def test_table_rows_obey_the_bon_bounds():
    """Every row: KL(π_N‖π_ref) <= log N - (N-1)/N and W(π_N, π_ref) <= N/(N+1) (Beirami et al.)."""
    _, _, ref_log_probs, rewards = toy_task()
    assert np.unique(rewards).size < rewards.size  # ties
    for row in table(ref_log_probs, rewards, [1, 2, 8, 1024]):
        assert row["kl"] <= row["kl_bound"] + RTOL_EXACT
        assert row["win_rate"] <= row["win_rate_bound"] + RTOL_EXACT
