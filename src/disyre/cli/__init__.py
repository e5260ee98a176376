"""The ``disyre`` command line: thin wrappers that parse flags, build configs, call the stages.

Each sub-command lives in its own module of this package and exposes
``add_parser(subparsers)`` (registering itself, with ``func=run``) and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from disyre.cli.options import add_overrides_argument  # noqa: F401 - re-exported

#: sub-command modules, in the order ``disyre --help`` lists them
COMMANDS = ("preprocess", "prepare", "corruptions", "train", "detect", "bids", "evaluate",
            "benchmark", "demo", "export")


class CLIError(Exception):
    """An error to report to the user as one line, without a traceback."""


def apply_inference_overrides(detector: object, overrides: list[str]) -> None:
    """Apply ``--set inference.KEY=VALUE`` overrides to a detector's config (in place).

    Raises:
        CLIError: An override outside the ``inference`` section (the model is fixed).
    """
    from disyre.config import apply_overrides

    bad = [o for o in overrides if not o.split("=", 1)[0].strip().startswith("inference.")]
    if bad:
        raise CLIError(f"--set {bad[0]!r}: only inference.* settings can change at detection")
    if overrides:
        detector.cfg = apply_overrides(detector.cfg, list(overrides))  # type: ignore[attr-defined]


def build_parser() -> argparse.ArgumentParser:
    from disyre import __version__

    p = argparse.ArgumentParser(
        prog="disyre",
        description="Unsupervised anomaly detection in brain MRI (DISYRE v1/v2).",
    )
    p.add_argument("--version", action="version", version=f"disyre {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"disyre.cli.{name}").add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``disyre`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command, for provenance
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from disyre.config import ConfigError
    from disyre.io_utils import CheckpointError

    try:
        return int(args.func(args) or 0)
    except (CLIError, ConfigError, CheckpointError, OSError, ValueError, FloatingPointError) as e:
        # OSError: unwritable or missing files and folders, OutputExistsError;
        # FloatingPointError: training diverged
        if args.verbose:
            raise
        print(f"disyre {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"disyre {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
