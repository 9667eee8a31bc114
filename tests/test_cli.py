"""bonmath.cli: tuple options take one or more values, or zero where the field allows it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bonmath.cli import option, parse_config
from bonmath.seed_study import SeedStudyConfig


@dataclass
class Config:
    """Toy job."""

    ks: tuple[int, ...] = option("group sizes", (2, 4), minimum=1)
    extra: tuple[int, ...] = option("optional sizes", (8,), minimum=1, allow_empty=True)


def test_an_allow_empty_tuple_option_given_alone_is_the_empty_tuple():
    """`--extra` with no values parses to (); values still parse and are checked."""
    assert parse_config(Config, ["--extra"]) == Config(extra=())
    assert parse_config(Config, ["--extra", "3", "5"]) == Config(extra=(3, 5))
    with pytest.raises(SystemExit) as exit_info:
        parse_config(Config, ["--extra", "0"])
    assert exit_info.value.code == 2


def test_a_tuple_option_without_allow_empty_refuses_no_values(capsys):
    """`--ks` alone is an argparse error (status 2), not an empty tuple."""
    with pytest.raises(SystemExit) as exit_info:
        parse_config(Config, ["--ks"])
    assert exit_info.value.code == 2
    assert "--ks" in capsys.readouterr().err


def test_the_seed_studys_trl_series_can_be_switched_off_on_the_command_line():
    """`--trl-ns` alone runs no TRL series (the full-size study was run that way)."""
    assert parse_config(SeedStudyConfig, ["--trl-ns"]).trl_ns == ()


def test_allow_empty_must_be_a_bool():
    with pytest.raises(TypeError, match="allow_empty"):
        option("sizes", (1,), allow_empty="yes")
