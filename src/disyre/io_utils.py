"""File-system helpers shared by all stages: atomic writes, output-folder guards, provenance.

Every file disyre writes goes through :func:`atomic_path` (write to a temporary file in the
same folder, then ``os.replace``), so an interrupted run never leaves a half-written file
under the final name.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "a.txt").read_text()
    'hello'
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


class OutputExistsError(FileExistsError):
    """Refusing to overwrite a user's existing outputs."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read (the message names it and says why)."""


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only on success.

    The temporary file keeps ``path``'s suffixes (so writers that look at the extension,
    such as nibabel's ``.nii.gz``, behave). On any exception it is removed and ``path`` is
    left as it was.

    Args:
        path: The final file.
        overwrite: Replace an existing ``path``. With ``False`` the file is put in place only if
            ``path`` does not exist by then (atomically, through a hard link, where the file
            system has them), so that two processes never replace each other's outputs.

    Raises:
        OutputExistsError: ``overwrite`` is false and ``path`` exists.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, file_mode())  # mkstemp makes 0600; outputs get the usual mode
    try:
        yield tmp_path
        if overwrite:
            os.replace(tmp_path, path)
        else:
            _move_if_new(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _move_if_new(src: Path, dst: Path) -> None:
    exists = OutputExistsError(f"{dst}: exists (written by another run meanwhile?); not "
                               "replaced")
    try:
        os.link(src, dst)
    except FileExistsError:
        raise exists from None
    except OSError:  # no hard links on this file system: check, then rename
        if dst.exists():
            raise exists from None
        os.replace(src, dst)
        return
    src.unlink()


class OutputNotWritableError(PermissionError):
    """An output folder cannot be created or written to."""


def ensure_writable_dir(path: str | Path) -> Path:
    """Create the folder ``path`` if needed and check that files can be written in it.

    Called before any long computation, so that an unwritable output folder fails at once.

    Raises:
        OutputNotWritableError: ``path`` cannot be created, or a file cannot be made in it.
        OutputExistsError: ``path`` exists and is not a folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".disyre-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputNotWritableError(
            f"{path}: output folder is not writable ({e.strerror or e}); choose another "
            "folder or fix its permissions") from e
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new file under the process's umask (``0o644`` for the usual ``022``)."""
    return 0o666 & ~_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsynced before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def prepare_output_dir(path: str | Path, *, overwrite: bool = False,
                       marker: str | None = None) -> Path:
    """Create ``path`` for new outputs, refusing to reuse a non-empty folder.

    Args:
        path: Output folder.
        overwrite: Allow a folder that already holds files (they may be replaced).
        marker: If given, only refuse when this file exists in the folder (e.g. a
            run's ``config.json``); other files are ignored.

    Raises:
        OutputExistsError: The folder already holds outputs and ``overwrite`` is false.
        OutputNotWritableError: The folder cannot be created or written to.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path}: exists and is not a folder")
    if path.is_dir() and not overwrite:
        taken = (path / marker).exists() if marker else any(path.iterdir())
        if taken:
            raise OutputExistsError(
                f"{path}: folder already holds outputs; pass --overwrite to replace them"
                + (" or --resume to continue" if marker else "")
            )
    return ensure_writable_dir(path)


def provenance() -> dict[str, Any]:
    """Versions of Python, disyre and the key libraries, for files that record what made them."""
    out: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for mod in ("disyre", "torch", "monai", "numpy", "nibabel", "scipy", "sklearn"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "unknown")
        except ImportError:
            out[mod] = None
    return out


def json_safe(o: Any) -> Any:
    """``o`` with string keys, lists for tuples, Python numbers for numpy ones and ``None`` for
    NaN / Inf: what ``json.dumps(..., allow_nan=False)`` accepts.

    Example:
        >>> json_safe({1: (0.5, float("nan"))})
        {'1': [0.5, None]}
    """
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [json_safe(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o
