"""argparse value types shared by the command-line stages: bad numbers stop at parse time with a clear message."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def int_at_least(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """A whole number >= lo (and <= hi when given)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if v < lo or (hi is not None and v > hi):
            span = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise argparse.ArgumentTypeError(f"{v} is out of range: use a whole number {span}")
        return v

    parse.__name__ = "int"
    return parse


def number(lo: float, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False) -> Callable[[str], float]:
    """A finite number in [lo, hi] (either end open when asked)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        too_low = v <= lo if lo_open else v < lo
        too_high = v >= hi if hi_open else v > hi
        if too_low or too_high:
            if hi != math.inf:
                span = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            else:
                span = f"more than {lo:g}" if lo_open else f"at least {lo:g}"
            raise argparse.ArgumentTypeError(f"{v:g} is out of range: use a number {span}")
        return v

    parse.__name__ = "float"
    return parse


POSITIVE = number(0, lo_open=True)
NON_NEGATIVE = number(0)
FRACTION = number(0, 1, lo_open=True, hi_open=True)  # a share strictly between 0 and 1, e.g. --valid-pct


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: X)" after each help text, except where there is no default to show (None, False): those
    help texts say in words what happens by default (for example "default: 224 original, 320 fast")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)
