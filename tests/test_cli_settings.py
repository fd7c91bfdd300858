"""RunSettings: the one settings object an analysis command is built from (parsed argv -> fields)."""

from __future__ import annotations

import argparse

from lminf_diag.cli.main import build_parser
from lminf_diag.cli.pipeline import method_of, patch_settings, record_args
from lminf_diag.cli.settings import RunSettings, settings_of


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_from_args_reads_the_parsed_options():
    args = _parse("entropy", "--model", "lab-rope", "--length", "2048", "--n-global", "4", "--n-local", "64",
                  "--limit", "60", "--mode", "window", "--mode", "lambda", "--windows", "3", "--train-len", "128",
                  "--seed", "7", "--stride", "5", "--layers", "0,1")
    s = RunSettings.from_args(args)
    assert (s.model, s.length, s.windows, s.seed) == ("lab-rope", 2048, 3, 7)
    assert (s.n_global, s.n_local, s.limit, s.train_len) == (4, 64, 60, 128)
    assert s.labels == ("baseline", "window", "lambda") and s.modes == ("window", "lambda") and s.methods == ()
    assert s.stride == 5 and s.resolved_stride == 5 and list(s.layers) == [0, 1]
    assert s.text == "carroll-alice" and s.repeat is False and s.rope_factor is None


def test_defaults_and_methods():
    s = RunSettings.from_args(_parse("entropy", "--model", "lab-rope", "--method", "streaming"))
    # the lab models default to 16 windows; --method alone runs no --mode; n_global's default is 10
    assert s.windows == 16 and s.labels == ("baseline", "streaming") and s.modes == ()
    assert s.methods == ("streaming",) and s.n_global == 10 and s.n_local is None and s.stride == "auto"


def test_pipeline_reads_the_one_object():
    args = _parse("entropy", "--model", "lab-rope", "--length", "512", "--n-local", "64")
    s = settings_of(args)
    assert settings_of(args) is s  # built once per command
    assert patch_settings(args, "lambda", 128) == {"n_global": 10, "n_local": 64, "limit": None, "mode": "lambda"}
    assert patch_settings(s, "window", 128) == patch_settings(args, "window", 128)
    no_local = settings_of(_parse("entropy", "--model", "lab-rope"))
    assert no_local.patch("lambda", 128)["n_local"] == 128  # n_local defaults to the training length
    record = record_args(args, 3)
    assert record["n_local"] == 64 and record["windows"] == 16 and record["stride"] == 3 and record["layers"] == "all"
    assert record == record_args(s, 3)
    assert method_of(args, "baseline", None, 128, 512) is None and method_of(args, "lambda", None, 128, 512) is None
