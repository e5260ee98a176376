"""Many subjects: a process pool, resumable, one failed subject reported without stopping others.

Layout of an output folder::

    OUT/preprocessing.json          the recipe and its output grid (read by training)
    OUT/manifest.csv                the preprocessed scans, ready for ``disyre prepare``/``train``
    OUT/<subject>/<subject>.nii.gz  the brain on the template grid, and beside it
                                    <subject>_mask.nii.gz, <subject>_native_mask.nii.gz,
                                    <subject>_to_template_*, <subject>_qc.png,
                                    <subject>.json (inputs' fingerprints, recipe, figures)

A subject whose ``<subject>.json`` records the same inputs (path, size, mtime, checksum) and
the same recipe, with all its outputs present, is skipped.

Example::

    jobs = jobs_from_input("raw/")
    summary = preprocess_many(jobs, "prep/", PreprocessConfig(), workers=2)
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disyre.data.manifest import ManifestRow
from disyre.data.nifti import NIFTI_SUFFIXES, InputError, is_nifti_file, nifti_stem
from disyre.preprocessing.recipe import RECIPE_FILE, PreprocessConfig, write_recipe

__all__ = ["Job", "Summary", "jobs_from_input", "jobs_from_rows", "preprocess_many",
           "preprocess_one"]

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One scan to preprocess (a manifest row, or a file with a contrast)."""

    subject: str
    image: Path
    t1: Path | None = None
    lesion: Path | None = None
    binarize_lesion: bool = False
    contrast: str = "t1"
    split: str = "train"


@dataclass
class Summary:
    """What :func:`preprocess_many` did.

    Attributes:
        rows: Manifest rows of the preprocessed scans (done and skipped), input order.
        done: Subjects processed now.
        skipped: Subjects whose outputs were up to date.
        failed: ``(subject, message)`` of each subject that failed.
        records: Each successful subject's record (``<subject>.json`` contents).
    """

    rows: list[ManifestRow] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


def jobs_from_rows(rows: list[ManifestRow]) -> list[Job]:
    """Jobs of manifest rows (contrast ``t1`` where the row names none)."""
    return [Job(r.subject, r.image, t1=r.t1, lesion=r.lesion_mask,
                binarize_lesion=r.binarize_lesion, contrast=r.contrast or "t1", split=r.split)
            for r in rows]


def jobs_from_input(path: str | Path, contrast: str = "t1", t1: str | Path | None = None,
                    split: str = "train") -> list[Job]:
    """Jobs of a NIfTI file, a folder of them, or a manifest CSV.

    Args:
        path: ``.nii``/``.nii.gz`` file, folder (its NIfTI files, not recursive) or ``.csv``.
        contrast: Contrast of file/folder inputs (a manifest says its own).
        t1: The subject's T1 (single-file input only).
        split: Split of file/folder inputs in the output manifest.

    Raises:
        InputError: Nothing to process, or ``t1`` with several scans.
    """
    from disyre.data.manifest import read_manifest

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: input not found")
    if path.is_file() and path.suffix.lower() == ".csv":
        if t1 is not None:
            raise InputError(f"{path}: --t1 applies to a single scan; a manifest names each "
                             "subject's T1 in its 't1' column")
        return jobs_from_rows(read_manifest(path))
    if path.is_file():
        if not path.name.lower().endswith(NIFTI_SUFFIXES):
            raise InputError(f"{path}: not a NIfTI file or a manifest (.nii, .nii.gz, .csv)")
        files = [path]
    else:
        files = sorted(p for p in path.iterdir()
                       if not p.name.startswith(".") and is_nifti_file(p))
        if not files:
            raise InputError(f"{path}: no NIfTI files (.nii/.nii.gz) in the folder")
        if t1 is not None and len(files) > 1:
            raise InputError(f"{path}: --t1 applies to a single scan, the folder holds "
                             f"{len(files)}; use a manifest with a 't1' column")
    return [Job(nifti_stem(f.name), f, t1=Path(t1) if t1 else None, contrast=contrast, split=split)
            for f in files]


def _inputs(job: Job) -> dict[str, Any]:
    from disyre.data.cache import fingerprint

    out = {"image": fingerprint(job.image)}
    if job.t1 is not None:
        out["t1"] = fingerprint(job.t1)
    if job.lesion is not None:
        out["lesion"] = fingerprint(job.lesion)
        out["binarize_lesion"] = job.binarize_lesion
    out["contrast"] = job.contrast
    return out


def _outputs_key(recipe: dict[str, Any]) -> dict[str, Any]:
    """The parts of a recipe that shape the outputs (the checks' thresholds do not)."""
    return {k: v for k, v in recipe.items()
            if k not in ("min_dice", "min_brain_ml", "grid", "provenance")}


def _up_to_date(job: Job, folder: Path, recipe: dict[str, Any]) -> dict[str, Any] | None:
    rec_path = folder / f"{job.subject}.json"
    if not rec_path.is_file():
        return None
    try:
        rec = json.loads(rec_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    try:
        same = rec.get("inputs") == json.loads(json.dumps(_inputs(job))) and \
            _outputs_key(rec.get("recipe", {})) == _outputs_key(recipe) and \
            rec.get("dice_template", 0) >= recipe["min_dice"]
    except OSError:
        return None
    files = list(rec.get("outputs", {}).values()) + rec.get("transform", {}).get("forward", [])
    if same and all((folder / f).is_file() for f in files):
        return rec
    return None


def preprocess_one(job: Job, out: str | Path, cfg: PreprocessConfig,
                   device: str = "cpu", qc: bool = True) -> dict[str, Any]:
    """Preprocess one job into ``out/<subject>/`` and write its record; returns the record.

    Raises:
        disyre.data.nifti.InputError: Bad input or a failed check (message names the scan).
    """
    import time

    from disyre.io_utils import atomic_write_json, provenance
    from disyre.preprocessing.pipeline import preprocess_scan, write_outputs
    from disyre.preprocessing.template import load_template

    t0 = time.perf_counter()
    folder = Path(out) / job.subject
    def template():  # noqa: ANN202 - loaded once the scan has passed its checks
        return load_template(cfg.template, cfg.spacing, expect_sha1=cfg.template_sha1)

    Path(out).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".work_", dir=Path(out)))
    try:
        pre = preprocess_scan(job.image, cfg, template, work, t1=job.t1, lesion=job.lesion,
                              binarize_lesion=job.binarize_lesion, contrast=job.contrast,
                              device=device, subject=job.subject)
        files = write_outputs(pre, folder, qc=qc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import ants

    try:
        from importlib.metadata import version

        deepbet_version = version("deepbet")
    except Exception:  # pragma: no cover - metadata missing
        deepbet_version = None
    rec = {
        "subject": job.subject, "inputs": _inputs(job), "recipe": cfg.to_dict(), **files,
        "dice_template": round(pre.dice, 4), "brain_ml": round(pre.brain_ml, 1),
        "seconds": {k: round(v, 2) for k, v in pre.seconds.items()},
        "seconds_total": round(time.perf_counter() - t0, 2), "warnings": pre.warnings,
        "provenance": {**provenance(), "antspyx": ants.__version__, "deepbet": deepbet_version},
    }
    atomic_write_json(folder / f"{job.subject}.json", rec)  # written last: marks completion
    return rec


def _worker_init(threads: int | None) -> None:
    from disyre.preprocessing.steps import set_threads

    set_threads(threads)


def _run(job: Job, out: str, cfg_dict: dict[str, Any], device: str,
         qc: bool) -> tuple[str, dict[str, Any] | None, str | None, list[str]]:
    """Pool task: never raises; returns ``(subject, record, error, warnings)``."""
    import warnings

    cfg = PreprocessConfig.from_dict(cfg_dict)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rec = preprocess_one(job, out, cfg, device=device, qc=qc)
        except InputError as e:  # the message names the file and the problem
            return job.subject, None, str(e), []
        except Exception as e:  # a tool's own failure: report it, do not stop the others
            return job.subject, None, f"{job.image}: {type(e).__name__}: {e}", []
    return job.subject, rec, None, [str(w.message) for w in caught
                                    if issubclass(w.category, UserWarning)]


def preprocess_many(jobs: list[Job], out: str | Path, cfg: PreprocessConfig, *,
                    workers: int | None = None, threads: int | None = 1, device: str = "cpu",
                    overwrite: bool = False, progress: bool = True,
                    qc: bool = True) -> Summary:
    """Preprocess many scans into ``out`` (see the module docstring for the layout).

    Args:
        jobs: The scans (unique subject names).
        out: Output folder.
        cfg: The recipe.
        workers: Processes (default: the number of CPUs, at most the number of jobs).
        threads: Threads per process (ITK and torch; default 1, ``None``: libraries decide).
        device: Torch device of deepbet (``cpu``, ``cuda``).
        overwrite: Allow a folder holding another recipe's outputs (they are replaced).
        progress: Show a progress bar.
        qc: Write the QC figures.

    Returns:
        The :class:`Summary`; ``out/manifest.csv`` lists the successful subjects.

    Raises:
        disyre.io_utils.OutputExistsError: ``out`` holds another recipe's outputs.
        InputError: Duplicate subject names, or a bad template (checked before any work).
    """
    from tqdm import tqdm

    from disyre.data.manifest import write_manifest
    from disyre.io_utils import OutputExistsError
    from disyre.preprocessing.pipeline import output_names
    from disyre.preprocessing.template import load_template

    out = Path(out)
    names = [j.subject for j in jobs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"{out}: several scans would be written as subject {dup[0]!r}; give "
                         "them distinct names (a manifest's subject column)")
    template = load_template(cfg.template, cfg.spacing)  # refuses a bad template up front
    cfg = PreprocessConfig(**{**cfg.__dict__, "template": template.name,
                              "template_sha1": template.sha1})
    recipe = cfg.to_dict()
    old = out / RECIPE_FILE
    if old.is_file() and not overwrite:
        try:
            prev = json.loads(old.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{old}: unreadable preprocessing recipe ({e}); pass --overwrite "
                             "to replace it") from e
        if _outputs_key(prev) != _outputs_key(recipe):
            raise OutputExistsError(f"{out}: holds outputs of another preprocessing recipe "
                                    f"({prev.get('template')}, {prev.get('steps')}); pass "
                                    "--overwrite to replace them or choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    write_recipe(out, cfg, template.grid())
    summary = Summary()
    todo: list[Job] = []
    for job in jobs:
        rec = _up_to_date(job, out / job.subject, recipe)
        if rec is None:
            todo.append(job)
        else:
            summary.skipped.append(job.subject)
            summary.records[job.subject] = rec
    if summary.skipped:
        log.info("%d subject(s) up to date, skipped", len(summary.skipped))
    n = len(todo)
    workers = max(1, min(workers or os.cpu_count() or 1, n or 1))
    bar = tqdm(total=n, desc="preprocess", unit="subject", disable=not progress or n == 0)

    def collect(subject: str, rec: dict[str, Any] | None, err: str | None,
                warned: list[str]) -> None:
        bar.update(1)
        for w in warned:
            log.warning("%s", w)
        if err is not None:
            summary.failed.append((subject, err))
            log.error("%s: %s", subject, err)
        else:
            summary.done.append(subject)
            summary.records[subject] = rec  # type: ignore[assignment]

    args = (str(out), cfg.to_dict(), device, qc)
    if workers == 1:
        import torch

        old_threads = torch.get_num_threads()
        _worker_init(threads)
        try:
            for job in todo:
                collect(*_run(job, *args))
        finally:
            torch.set_num_threads(old_threads)
    elif n:
        ctx = multiprocessing.get_context("spawn")  # torch and ITK do not survive fork well
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(_run, job, *args): job for job in todo}
            for fut in as_completed(futures):
                try:
                    collect(*fut.result())
                except BrokenProcessPool:  # a worker died (killed for memory, say)
                    job = futures[fut]
                    collect(job.subject, None, f"{job.image}: the worker process died (out of "
                            "memory? try fewer --jobs)", [])
    bar.close()
    ok = set(summary.done) | set(summary.skipped)
    for job in jobs:
        if job.subject not in ok:
            continue
        folder = out / job.subject
        o = output_names(job.subject)
        summary.rows.append(ManifestRow(
            subject=job.subject, image=folder / o["image"],
            lesion_mask=folder / o["lesion"] if job.lesion is not None else None,
            brain_mask=folder / o["mask"], split=job.split, contrast=job.contrast))
    if summary.rows:
        write_manifest(summary.rows, out / "manifest.csv", overwrite=True, relative=True)
    return summary
