"""Every ``disyre`` command the README and the docs show in a code block parses as written.

The flags change between releases (``--out`` became ``-o/--output``): a command line in a doc
that the parser refuses, or accepts only through a deprecated spelling, is a trap for the
user who copies it. The workflows themselves run end to end in their own tests
(``tests/preprocessing/test_readme_workflow.py``, ``tests/demo/test_demo_e2e.py``,
``tests/test_detect_cli.py``); this test covers every command line the docs show.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from disyre.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.M | re.S)


def doc_commands() -> list[tuple[str, str]]:
    """``(where, command line)`` of every ``disyre`` command in a fenced block of the docs."""
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in FENCE.finditer(text):
            first = text.count("\n", 0, block.start(1)) + 1
            joined = block.group(1).replace("\\\n", " ")
            for k, line in enumerate(joined.splitlines()):
                if "disyre" not in line or line.lstrip().startswith(("#", ">>>", "from ",
                                                                     "import ")):
                    continue
                try:
                    tokens = shlex.split(line, comments=True)
                except ValueError:
                    continue
                ends = [i for i, t in enumerate(tokens)
                        if t in ("disyre", "disyre)") or t.endswith("/disyre")]
                if ends:  # the first: an output folder may end in /disyre (derivatives/disyre)
                    out.append((f"{doc.relative_to(ROOT)}:{first + k}",
                                shlex.join(tokens[ends[0] + 1:])))
    return out


COMMANDS = doc_commands()


def test_docs_show_commands() -> None:
    # the collector finds the README's own workflow (a broken regex would pass vacuously)
    names = {c.split()[0] for _w, c in COMMANDS if c}
    assert {"preprocess", "prepare", "train", "evaluate", "detect", "benchmark", "demo",
            "corruptions"} <= names, names
    assert len(COMMANDS) > 20


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _c in COMMANDS])
def test_doc_command_parses_with_current_spellings(where: str, command: str, capsys) -> None:
    args = shlex.split(command)
    if not args or args[0] in ("--help", "-h", "--version") or "--help" in args:
        return
    parser = build_parser()
    if "..." in args:  # an elided command: its flags must exist, in their current spelling
        sub = parser._subparsers._group_actions[0].choices[args[0]]  # type: ignore[union-attr]
        for flag in (a.split("=")[0] for a in args[1:] if a.startswith("-")):
            action = sub._option_string_actions.get(flag)
            assert action is not None, f"{where}: `disyre {args[0]}` has no flag {flag}"
            assert action.help != argparse.SUPPRESS, f"{where}: {flag} is an old spelling"
        return
    try:
        parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: `disyre {command}` does not parse: {capsys.readouterr().err}")
    err = capsys.readouterr().err
    assert "deprecated" not in err, f"{where}: `disyre {command}` uses an old spelling: {err}"
