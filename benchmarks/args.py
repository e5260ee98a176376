"""Argument types of the benchmark modules: every value is checked while the command line is
parsed, so a bad one is refused (``argparse``'s one-line usage error, exit status 2) before
any output is written or any work starts.

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser(exit_on_error=False)
    >>> _ = p.add_argument("--n-boot", type=at_least(0))
    >>> p.parse_args(["--n-boot", "10"]).n_boot
    10
    >>> at_least(0)("-1")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: -1: must be >= 0
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

__all__ = ["at_least", "existing_dir", "existing_file", "int_list", "new_file", "positive"]


def at_least(low: int) -> Callable[[str], int]:
    """An integer ``>= low`` (``at_least(0)``: counts where 0 means none)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{text}: not an integer") from e
        if v < low:
            raise argparse.ArgumentTypeError(f"{text}: must be >= {low}")
        return v
    parse.__name__ = f"integer >= {low}"
    return parse


def positive(text: str) -> float:
    """A number ``> 0``."""
    try:
        v = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text}: not a number") from e
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be > 0")
    return v


def int_list(low: int = 0) -> Callable[[str], list[int]]:
    """A comma-separated list of integers ``>= low`` (at least one)."""
    item = at_least(low)

    def parse(text: str) -> list[int]:
        parts = [t.strip() for t in text.split(",") if t.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers")
        return [item(t) for t in parts]
    parse.__name__ = "integer list"
    return parse


def existing_dir(text: str) -> Path:
    """A folder that exists."""
    p = Path(text)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"{p}: folder not found")
    return p


def existing_file(text: str) -> Path:
    """A file that exists."""
    p = Path(text)
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"{p}: file not found")
    return p


def new_file(text: str) -> Path:
    """An output file whose folder exists (the file itself is written at the end)."""
    p = Path(text)
    if not p.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{p}: folder {p.parent} not found")
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{p}: is a folder")
    return p
