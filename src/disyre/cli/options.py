"""The flags every sub-command shares, defined once: one spelling and one meaning each.

- ``-o/--output``: where the command writes (a folder, or the PNG of ``disyre corruptions``);
- ``--device``, ``--precision``: where and how the network runs;
- ``--no-progress``: hide progress bars (every command that shows one);
- ``--set SECTION.KEY=VALUE ...``: config overrides;
- ``--bootstrap``: bootstrap resamples of the confidence intervals (one default everywhere).

Old spellings stay accepted for one release through :func:`add_deprecated_alias`: hidden from
``--help``, they print one warning naming the new spelling.

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> add_output_argument(p, "run folder", deprecated=("--out",))
    >>> p.parse_args(["-o", "runs/a"]).output
    PosixPath('runs/a')
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

#: bootstrap resamples of every command: 1000 keeps the 2.5/97.5 percentiles of a 95 % interval
#: stable to about a percent of its width (200 moves them visibly between seeds)
DEFAULT_BOOTSTRAP = 1000

class _DeprecatedAlias(argparse.Action):
    """Store like the new flag, warn once on stderr that the old spelling is deprecated."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str,
                 **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        # once per command line, however often the old spelling is given
        warned = namespace.__dict__.setdefault("_deprecated_seen", set())
        if option_string not in warned:
            warned.add(option_string)
            print(f"{parser.prog}: warning: {option_string} is deprecated and will be removed "
                  f"in the next release; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(p: argparse._ActionsContainer, old: str, new: str, dest: str,
                         **kwargs: Any) -> None:
    """Accept the old spelling ``old`` of flag ``new`` (same ``dest``), hidden from ``--help``.

    Args:
        p: The parser.
        old: The deprecated spelling, e.g. ``"--out"``.
        new: The spelling to use, named in the warning, e.g. ``"-o/--output"``.
        dest: The attribute both spellings set.
        **kwargs: ``type``/``nargs`` of the new flag.
    """
    p.add_argument(old, dest=dest, action=_DeprecatedAlias, new=new, help=argparse.SUPPRESS,
                   default=argparse.SUPPRESS, **kwargs)


def add_output_argument(p: argparse.ArgumentParser, help: str, *, required: bool = True,
                        deprecated: tuple[str, ...] = ()) -> None:
    """``-o/--output PATH`` (``args.output``), plus hidden deprecated spellings."""
    # a required group: the deprecated spelling satisfies it too
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("-o", "--output", type=Path, default=None, help=help)
    for old in deprecated:
        add_deprecated_alias(g, old, "-o/--output", "output", type=Path)


def add_device_argument(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """``--device`` (``args.device``): auto, cpu, cuda, cuda:N."""
    p.add_argument("--device", default=default, help="auto | cpu | cuda | cuda:N"
                   + (f" (default {default})" if default else ""))


def add_precision_argument(p: argparse.ArgumentParser, help: str = "autocast precision") -> None:
    """``--precision`` (``args.precision``): auto, fp32 or bf16; default None (the config's)."""
    from disyre.config import PRECISIONS

    p.add_argument("--precision", choices=tuple(PRECISIONS), default=None, help=help)


def add_progress_argument(p: argparse.ArgumentParser) -> None:
    """``--no-progress`` (``args.no_progress``): hide progress bars."""
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_overrides_argument(p: argparse.ArgumentParser, example: str) -> None:
    """Add ``--set KEY=VALUE ...`` (config overrides) to a sub-command, as ``args.overrides``.

    Accepts several pairs after one flag and repeated flags alike.
    """
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                   metavar="SECTION.KEY=VALUE", help=f"config overrides, e.g. {example}")


def add_bootstrap_argument(p: argparse.ArgumentParser) -> None:
    """``--bootstrap N`` (``args.bootstrap``) with the one default of every command."""
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP,
                   help=f"bootstrap resamples of the 95%% intervals (0 = none; default "
                   f"{DEFAULT_BOOTSTRAP}: enough for stable 2.5/97.5 percentiles)")


def add_threshold_mismatch_argument(p: argparse.ArgumentParser) -> None:
    """``--allow-threshold-mismatch`` (``args.allow_threshold_mismatch``): apply thresholds
    fitted on maps of other inference settings or another checkpoint, with a warning."""
    p.add_argument("--allow-threshold-mismatch", action="store_true",
                   help="apply thresholds fitted on maps made with other inference settings or "
                   "another checkpoint (a warning instead of an error)")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a one-line error otherwise)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def add_train_jobs_argument(p: argparse.ArgumentParser) -> None:
    """``--train-jobs N`` (``args.train_jobs``): learned methods trained at once."""
    p.add_argument("--train-jobs", type=positive_int, default=None,
                   help="learned methods trained at once (default: decided from the device: "
                   "side by side on a multi-core CPU with AMX, cores shared evenly; 1 = one "
                   "after the other with every core)")


def add_weights_mismatch_argument(p: argparse.ArgumentParser) -> None:
    """``--allow-weights-mismatch`` (``args.allow_weights_mismatch``): load weights whose
    SHA-256 or method differs from what their checkpoint recorded, with a warning."""
    p.add_argument("--allow-weights-mismatch", action="store_true",
                   help="load weights that are not the ones their checkpoint recorded "
                   "(another hash or method; a warning instead of an error)")
