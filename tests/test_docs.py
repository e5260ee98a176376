"""Every document the project names exists: no citation leads nowhere.

Checked in the docs (``README.md`` and every ``.md`` file of the repository):

- relative Markdown links and images (``[text](path)``, ``![alt](path)``, ``<img src=...>``)
  point to a file of the repository, resolved from the linking file; a link's ``#anchor``
  into a Markdown file names one of its headings (GitHub's slugs);
- every ``.md`` file named in the text, inside code too (``docs/foo.md``, ``foo.md``).

Checked in the comments, docstrings and strings of ``src/``, ``tests/`` and ``benchmarks/``:
every ``.md`` file they name, with its ``#anchor`` if it has one.

Both also check a section cited by name right after the file (``docs/training.md,
"Speed levers"`` or ``docs/training.md ("Speed levers")``): one of the file's headings
starts with it.

A named ``.md`` file exists when it resolves from the repository root, from ``docs/`` or from
the naming file's folder; a bare name or a path into a folder the repository does not have
(an output folder such as ``demo_out/``) also exists when a file of that name is anywhere in
the repository. Files that the code writes (reports) are listed in :data:`OUTPUT_NAMES`.
"""

from __future__ import annotations

import io
import re
import subprocess
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: ``.md`` files that the code writes, not documents of the repository: their names may
#: appear anywhere (``report/report.md``, ``OUT/gpu_check.md``).
OUTPUT_NAMES: frozenset[str] = frozenset({
    "report.md", "comparison.md", "gpu_check.md", "windows_vs_whole.md",
})

#: Folders whose files are checked for the ``.md`` files they name (code: comments,
#: docstrings and strings only).
CODE_DIRS = ("src", "tests", "benchmarks")
CODE_SUFFIXES = {".py", ".sh", ".toml", ".yaml", ".yml", ".cfg", ".txt"}
_SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache", "build",
              "dist", "node_modules"}

_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
_MD_NAME = re.compile(r"(?<![\w/.$-])((?:[\w.<>$-]+/)*[\w.-]*\w\.md)(#[\w-]+)?(?![\w/])")
_SECTION_AFTER = re.compile(r'\s*(?:,|\()\s*(?:#:?\s*)?"([^"\n]+)"')
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.M)
_IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=[\"']([^\"']+)[\"']", re.I)
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=[\"']([^\"']+)[\"']", re.I)
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")


@dataclass(frozen=True)
class Problem:
    """One broken reference: the file naming it, its line, and what is wrong."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def repo_files(root: Path) -> list[Path]:
    """The repository's files: tracked and untracked-but-not-ignored (a walk without git)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=root, capture_output=True, check=True, timeout=60,
        ).stdout.decode()
        files = [root / p for p in out.split("\0") if p]
        if files:
            return [p for p in files if p.is_file()]
    except (OSError, subprocess.SubprocessError):
        pass
    found = []
    for p in root.rglob("*"):
        rel = p.relative_to(root).parts
        if p.is_file() and not any(part in _SKIP_DIRS or part.endswith(".egg-info")
                                   for part in rel):
            found.append(p)
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.

    Example:
        >>> slug("Augmentation (`augment.py`)"), slug("Side by side on a CPU, 2026-11-26")
        ('augmentation-augmentpy', 'side-by-side-on-a-cpu-2026-11-26')
    """
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _without_code(text: str) -> str:
    """Markdown text with fenced blocks and inline code blanked (line numbers kept)."""
    out, fenced = [], False
    for line in text.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def headings(path: Path) -> tuple[list[str], set[str]]:
    """The headings of a Markdown file (outside code blocks) and the anchors they define."""
    text = path.read_text(encoding="utf-8")
    titles, anchors, seen = [], set(), {}
    fenced = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            title = m.group(1)
            titles.append(title)
            base = slug(title)
            n = seen.get(base, 0)
            seen[base] = n + 1
            anchors.add(base if n == 0 else f"{base}-{n}")
    anchors.update(_HTML_ANCHOR.findall(text))
    return titles, anchors


def _blank_target(m: re.Match[str]) -> str:
    i, j = m.start(1) - m.start(0), m.end(1) - m.start(0)
    return m.group(0)[:i] + " " * (j - i) + m.group(0)[j:]


def _plain(title: str) -> str:
    return re.sub(r"[`*_]", "", title).strip().lower()


class Checker:
    """Resolves the references of one repository (``root``)."""

    def __init__(self, root: Path, outputs: frozenset[str] = OUTPUT_NAMES) -> None:
        self.root = root
        self.files = repo_files(root)
        self.by_name: dict[str, list[Path]] = {}
        for p in self.files:
            self.by_name.setdefault(p.name, []).append(p)
        self.outputs = outputs
        self._headings: dict[Path, tuple[list[str], set[str]]] = {}

    def _heads(self, path: Path) -> tuple[list[str], set[str]]:
        if path not in self._headings:
            self._headings[path] = headings(path)
        return self._headings[path]

    def resolve_name(self, name: str, naming: Path) -> list[Path] | None:
        """The files a named ``.md`` file can be; [] for an output; None when it is missing."""
        for base in (self.root, self.root / "docs", naming.parent):
            cand = (base / name).resolve()
            if cand.is_file():
                return [cand]
        parts = [q for q in Path(name).parts[:-1] if q != "."]
        if parts and (parts[0] == ".." or any(
                (base / parts[0]).is_dir()
                for base in (self.root, self.root / "docs", naming.parent))):
            return None                   # a path into the repository that is not there
        base_name = Path(name).name
        if base_name in self.by_name:
            return self.by_name[base_name]
        if base_name in self.outputs:
            return []
        return None

    def check_name(self, name: str, anchor: str | None, section: str | None, naming: Path,
                   line: int) -> list[Problem]:
        """Problems of one ``.md`` name (with its ``#anchor`` or cited section, if any)."""
        rel = str(naming.relative_to(self.root))
        found = self.resolve_name(name, naming)
        if found is None:
            return [Problem(rel, line, f"names {name}, which is not in the repository")]
        if not found:
            return []
        if anchor and not any(anchor[1:] in self._heads(p)[1] for p in found):
            return [Problem(rel, line, f"names {name}{anchor}: no such section in {name}")]
        if section and not any(_plain(t).startswith(_plain(section))
                               for p in found for t in self._heads(p)[0]):
            return [Problem(rel, line, f'names {name}, "{section}": no heading of {name} '
                                       "starts with it")]
        return []

    def names_in(self, text: str, naming: Path, first_line: int = 1) -> list[Problem]:
        """Problems of every ``.md`` file named in ``text`` (URLs left out)."""
        problems = []
        text = _URL.sub(lambda m: " " * len(m.group(0)), text)
        for m in _MD_NAME.finditer(text):
            sec = _SECTION_AFTER.match(text, m.end())
            line = first_line + text.count("\n", 0, m.start())
            problems += self.check_name(m.group(1), m.group(2), sec and sec.group(1), naming,
                                        line)
        return problems

    def check_markdown(self, path: Path) -> list[Problem]:
        """Links, images and named ``.md`` files of one Markdown file."""
        text = path.read_text(encoding="utf-8")
        rel = str(path.relative_to(self.root))
        problems = []
        prose = _without_code(text)
        targets = [(m.group(1), m.start()) for m in _LINK.finditer(prose)]
        targets += [(m.group(1), m.start(1)) for m in _REF_DEF.finditer(prose)]
        targets += [(m.group(1), m.start(1)) for m in _IMG_SRC.finditer(prose)]
        for target, pos in targets:
            line = 1 + prose.count("\n", 0, pos)
            if _URL.match(target) or target.startswith(("mailto:", "//")):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                problems.append(Problem(rel, line, f"links to {target}: {file_part} does not "
                                                   f"exist (relative to {rel})"))
            elif anchor and dest.suffix == ".md" and anchor not in self._heads(dest)[1]:
                problems.append(Problem(rel, line, f"links to {target}: no such section"))
        # the .md files named outside links (link targets, checked above, are blanked)
        problems += self.names_in(_LINK.sub(_blank_target, text), path)
        return problems

    def check_code(self, path: Path) -> list[Problem]:
        """Named ``.md`` files in the comments, docstrings and strings of a code file."""
        text = path.read_text(encoding="utf-8")
        if path.suffix != ".py":
            return self.names_in(text, path)
        problems = []
        try:
            tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
        except (tokenize.TokenError, SyntaxError):
            return self.names_in(text, path)
        kinds = {tokenize.COMMENT, tokenize.STRING}
        for tok in tokens:
            if tok.type in kinds:
                problems += self.names_in(tok.string, path, tok.start[0])
        return problems

    def check(self) -> list[Problem]:
        """Every problem of the repository's docs and code."""
        problems = []
        for p in sorted(self.files):
            parts = p.relative_to(self.root).parts
            if p.resolve() == Path(__file__).resolve():
                continue                  # this file: its strings are broken on purpose
            if p.suffix == ".md":
                problems += self.check_markdown(p)
            elif parts[0] in CODE_DIRS and p.suffix in CODE_SUFFIXES:
                problems += self.check_code(p)
        return problems


def test_repository_names_only_documents_it_has() -> None:
    problems = Checker(ROOT).check()
    assert not problems, "broken references:\n" + "\n".join(map(str, problems))


def test_output_names_are_still_written() -> None:
    # an entry of OUTPUT_NAMES that no code mentions any more would excuse a broken name
    code = "\n".join(p.read_text(encoding="utf-8") for d in ("src", "benchmarks")
                     for p in (ROOT / d).rglob("*") if p.suffix in {".py", ".sh"})
    assert all(name in code for name in OUTPUT_NAMES), sorted(
        n for n in OUTPUT_NAMES if n not in code)


# --- the checker itself, on a small repository --------------------------------------------


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    (tmp_path / "docs" / "img").mkdir(parents=True)
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "docs" / "img" / "a.png").write_bytes(b"png")
    (tmp_path / "docs" / "method.md").write_text(
        "# Method\n\n## Data and scaling\n\ntext\n\n```bash\n# not a heading\n```\n\n"
        "## Speed levers (`x.py`)\n")
    (tmp_path / "README.md").write_text(
        "See [method](docs/method.md#data-and-scaling) and ![img](docs/img/a.png).\n"
        "Outputs land in `out/report.md`; [site](https://example.org/x.md).\n")
    (tmp_path / "src" / "pkg" / "mod.py").write_text(
        '"""Module (docs/method.md#speed-levers-xpy)."""\n\n'
        '# the recipe: docs/method.md, "Data and scaling"\n'
        'NAME = "method.md"\n')
    return tmp_path


def _messages(root: Path) -> list[str]:
    return [str(p) for p in Checker(root).check()]


def test_checker_accepts_a_consistent_repository(repo: Path) -> None:
    assert _messages(repo) == []


@pytest.mark.parametrize("path, old, new, expect", [
    ("README.md", "docs/method.md#", "docs/methods.md#", "README.md:1: links to docs/methods.md"),
    ("README.md", "#data-and-scaling", "#data", "README.md:1: links to docs/method.md#data: no"),
    ("README.md", "img/a.png", "img/b.png", "README.md:1: links to docs/img/b.png"),
    ("README.md", "`out/report.md`", "`out/notes.md`", "README.md:2: names out/notes.md"),
    ("README.md", "`out/report.md`", "`docs/notes.md`", "README.md:2: names docs/notes.md"),
    ("src/pkg/mod.py", "(docs/method.md#speed", "(docs/methd.md#speed",
     "src/pkg/mod.py:1: names docs/methd.md"),
    ("src/pkg/mod.py", "#speed-levers-xpy", "#speed-levers", "src/pkg/mod.py:1: names "
     "docs/method.md#speed-levers: no such section"),
    ("src/pkg/mod.py", '"Data and scaling"', '"Not there"', 'src/pkg/mod.py:3: names '
     'docs/method.md, "Not there"'),
    ("src/pkg/mod.py", '"method.md"', '"targets.md"', "src/pkg/mod.py:4: names targets.md"),
])
def test_checker_finds_each_broken_reference(repo: Path, path: str, old: str, new: str,
                                             expect: str) -> None:
    f = repo / path
    assert f.read_text().count(old) == 1
    f.write_text(f.read_text().replace(old, new))
    msgs = _messages(repo)
    assert len(msgs) == 1 and msgs[0].startswith(expect), msgs


def test_checker_ignores_code_blocks_for_links_and_headings(repo: Path) -> None:
    (repo / "docs" / "more.md").write_text(
        "```python\nx = a[0](b)\n```\nsee `[x](nowhere.png)` and [m](method.md#method)\n")
    assert _messages(repo) == []
    (repo / "docs" / "more.md").write_text("[m](method.md#not-a-heading)\n")
    assert _messages(repo) == ["docs/more.md:1: links to method.md#not-a-heading: no such "
                               "section"]
