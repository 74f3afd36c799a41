"""Bad numbers on the command line stop every stage at parse time, with the flag named and nothing written."""

from __future__ import annotations

import argparse

import pytest

from train import clean, evaluate, fit, gather
from train.cli import FRACTION, int_at_least, number


@pytest.mark.parametrize(
    "main, argv, flag",
    [
        (fit.main, ["--size", "-5"], "--size"),
        (fit.main, ["--size", "big"], "--size"),
        (fit.main, ["--valid-pct", "1.5"], "--valid-pct"),
        (fit.main, ["--valid-pct", "0"], "--valid-pct"),
        (fit.main, ["--bs", "0"], "--bs"),
        (fit.main, ["--epochs", "0"], "--epochs"),
        (fit.main, ["--lr", "nan"], "--lr"),
        (fit.main, ["--min-scale", "0"], "--min-scale"),
        (fit.main, ["--max-false-abstain", "1"], "--max-false-abstain"),
        (fit.main, ["--tta-zoom", "1.2"], "--tta-zoom"),
        (fit.main, ["--tta-zoom", "0.1"], "--tta-zoom"),
        (clean.main, ["--folds", "1"], "--folds"),
        (clean.main, ["--image-size", "0"], "--image-size"),
        (clean.main, ["--dup-bits", "65"], "--dup-bits"),
        (clean.main, ["--port", "70000"], "--port"),
        (gather.main, ["--workers", "0"], "--workers"),
        (gather.main, ["--timeout", "0"], "--timeout"),
        (gather.main, ["--retries", "-1"], "--retries"),
        (gather.main, ["--max-bytes", "0"], "--max-bytes"),
        (evaluate.main, ["--valid-pct", "2"], "--valid-pct"),
    ],
)
def test_an_out_of_range_number_is_a_usage_error_naming_the_flag(tmp_path, capsys, main, argv, flag):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    out = tmp_path / "out"
    if main is fit.main:
        base = [str(data), "--out", str(out)]
    elif main is clean.main:
        base = [str(data), "--out", str(out / "scores.csv")]
    elif main is gather.main:
        base = ["--folder", str(data), "--out", str(out)]
    else:
        base = [str(tmp_path / "artifact"), str(data), "--out", str(out)]
    with pytest.raises(SystemExit) as e:
        main(base + argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and ("out of range" in err or "is not a" in err)
    assert "Traceback" not in err and not out.exists()


def test_the_value_types_accept_the_edges_they_promise():
    assert int_at_least(1)("1") == 1 and int_at_least(0, 64)("64") == 64
    assert FRACTION("0.2") == 0.2 and number(0, 1, hi_open=True)("0") == 0.0
    for parse, text in [(int_at_least(1), "0"), (int_at_least(0, 64), "65"), (FRACTION, "1"), (FRACTION, "inf")]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


@pytest.mark.parametrize("main", [fit.main, evaluate.main])
def test_help_never_says_default_none(main, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "(default: None)" not in out and "(default: False)" not in out
    assert "(default: 0.2)" in out  # real defaults are still shown
