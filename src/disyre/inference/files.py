"""Folder in, folder out: anomaly maps for NIfTI files, as ``disyre detect`` writes them.

:func:`detect_files` is what ``disyre detect`` runs once its flags are parsed, for Python
users of :class:`~disyre.inference.Detector` alike: the input listing, the output names
(MOOD contract), collisions, the threshold lookup and its check against the maps,
``continue_`` (verified), shards, progress and the per-scan loop.

Outputs (in ``output_dir``), for an input ``case.nii.gz``:

- ``mode="pixel"``: ``case.nii.gz``, a float32 map in [0, 1] of exactly the input's shape
  and affine; ``mode="sample"``: ``case.nii.gz.txt``, the volume score; ``"both"``;
- ``case_restored.nii.gz`` (``save_restored``), ``case_mask.nii.gz`` (``threshold``),
  ``case_overlay.png`` (``png``);
- ``disyre_maps.json`` (pixel maps): what made each map (inference settings, checkpoint and
  weights hash), which ``disyre evaluate --maps`` checks a thresholds file against.

Every output is written whole under a temporary name and renamed into place
(:func:`disyre.io_utils.atomic_path`), so an interrupted run leaves no partial file under an
output's name; with ``continue_`` every output of a scan is read back whole before the scan
counts as done.

Example:
    >>> # from disyre.inference import Detector, detect_files
    >>> # det = Detector.from_checkpoint("runs/t2")
    >>> # summary = detect_files("scans/", "maps/", det, checkpoint="runs/t2",
    >>> #                        threshold="fpr=0.01", png=True)
    >>> # print(summary.report()); summary.scores   # {Path("scans/a.nii.gz"): 0.18, ...}
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disyre.data.nifti import NIFTI_SUFFIXES, InputError, check_nifti_path, nifti_stem
from disyre.inference.thresholds import (
    ThresholdChoice,
    check_binding,
    maps_maker,
    resolve_threshold,
    write_maps_record,
)
from disyre.io_utils import OutputExistsError, atomic_path, ensure_writable_dir

log = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("pixel", "sample", "both")

#: ``predict(detector, scan, progress=..., on_total=...) -> DetectionResult``: how one scan is
#: mapped (default :meth:`Detector.predict`; raw heads: ``disyre.preprocessing.predict_raw``).
Predict = Callable[..., Any]


class OutputWriteError(OSError):
    """An output could not be written (full disk, permissions): the message names the file."""


@dataclass
class InputListing:
    """The files of an input (a scan or a folder).

    Attributes:
        scans: NIfTI files, sorted.
        others: Other files of the folder (skipped).
        broken_links: Symbolic links in the folder whose target does not exist (skipped).
    """

    scans: list[Path]
    others: list[Path] = field(default_factory=list)
    broken_links: list[Path] = field(default_factory=list)


def list_inputs(path: str | Path) -> InputListing:
    """The NIfTI files of a folder (sorted), or the file ``path`` itself.

    Raises:
        InputError: Nothing at ``path``, a file that is not NIfTI, or a folder without one.
    """
    path = check_nifti_path(path, folder_ok=True)
    if path.is_file():
        return InputListing([path])
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    broken = [p for p in entries if p.is_symlink() and not p.exists()]
    files = [p for p in entries if p.is_file()]
    scans = [p for p in files if p.name.lower().endswith(NIFTI_SUFFIXES)]
    others = [p for p in files if p not in scans]
    if not scans:
        raise InputError(f"{path}: no NIfTI files (.nii/.nii.gz) in the folder"
                         + (f" ({len(broken)} broken symbolic link(s), e.g. {broken[0].name})"
                            if broken else ""))
    return InputListing(scans, others, broken)


def parse_shard(shard: str | tuple[int, int] | None,
                env: dict[str, str] | None = None) -> tuple[int, int]:
    """``"i/n"`` or ``(i, n)`` -> ``(i, n)``; ``None``: torchrun's ``RANK``/``WORLD_SIZE``
    or ``(0, 1)``.

    Raises:
        ValueError: Not ``I/N`` with ``0 <= I < N``.
    """
    env = os.environ if env is None else env
    if shard is None:
        return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1))
    if isinstance(shard, str):
        try:
            i, n = (int(v) for v in shard.split("/"))
        except ValueError as e:
            raise ValueError(f"shard {shard!r}: expected I/N, e.g. 0/2") from e
    else:
        i, n = (int(v) for v in shard)
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard {i}/{n}: need 0 <= I < N")
    return i, n


def output_paths(scan: Path, output_dir: Path, *, mode: str = "pixel",
                 save_restored: bool = False, mask: bool = False,
                 png: bool = False) -> dict[str, Path]:
    """The outputs of ``scan``: ``{"map", "score", "restored", "mask", "png"}`` as asked."""
    stem = nifti_stem(scan.name)
    o: dict[str, Path] = {}
    if mode in ("pixel", "both"):
        o["map"] = output_dir / scan.name
    if mode in ("sample", "both"):
        o["score"] = output_dir / f"{scan.name}.txt"
    if save_restored:
        o["restored"] = output_dir / f"{stem}_restored.nii.gz"
    if mask:
        o["mask"] = output_dir / f"{stem}_mask.nii.gz"
    if png:
        o["png"] = output_dir / f"{stem}_overlay.png"
    return o


def _check_targets(targets: dict[Path, dict[str, Path]], inputs: list[Path]) -> None:
    """Refuse outputs that would replace an input, or that two scans would both write."""
    given = {p.resolve(): p for p in inputs}
    owner: dict[Path, Path] = {}
    for scan, tgt in targets.items():
        for p in tgt.values():
            r = p.resolve()
            if r in given:
                raise OutputExistsError(f"{p}: output would replace the input {given[r]}; "
                                        "choose another output folder")
            if r in owner:
                raise OutputExistsError(
                    f"{owner[r].name} and {scan.name} would both write {p.name}; rename one "
                    "of them or detect them into different folders")
            owner[r] = scan


def check_output(scan: Path, tgt: dict[str, Path]) -> str | None:
    """Why the outputs ``tgt`` of ``scan`` are not all there and whole, or ``None``.

    NIfTI outputs (keys ``map``, ``restored``, ``mask`` and ``mask:...``) must have the scan's
    shape and their data must read whole (a file cut short reads its header but not its
    data), the score must be a number in [0, 1], the PNG must decode, a ``.json`` file must
    parse.
    """
    import nibabel as nib
    import numpy as np

    for p in tgt.values():
        if not p.is_file():
            return f"{p.name} missing"
    try:
        shape = nib.load(str(scan)).shape[:3]
    except Exception as e:  # the input itself is unreadable: let the run report it
        return f"input unreadable ({e})"
    for key, p in tgt.items():
        try:
            if p.name.endswith(".json"):
                import json

                json.loads(p.read_text(encoding="utf-8"))
            elif key in ("map", "restored", "mask") or key.startswith("mask:"):
                img = nib.load(str(p))
                if img.shape[:3] != shape:
                    return f"{p}: shape {img.shape[:3]} is not the scan's {shape}"
                data = np.asarray(img.dataobj)
                if not key.startswith("mask") and not np.isfinite(data).all():
                    return f"{p}: holds NaN or Inf"
            elif key == "score":
                v = float(p.read_text())
                if not 0 <= v <= 1:
                    return f"{p}: score {v} outside [0, 1]"
            elif key == "png":
                from PIL import Image

                with Image.open(p) as im:
                    im.load()
        except Exception as e:  # nibabel, gzip, zlib and PIL raise many kinds
            return f"{p}: does not read whole ({type(e).__name__}: {e})"
    return None


def _write(path: Path, writer: Callable[[Path], None], overwrite: bool) -> None:
    """Write one output whole under a temporary name, then rename it into place."""
    try:
        with atomic_path(path, overwrite=overwrite) as tmp:
            writer(tmp)
    except OutputExistsError:
        raise
    except OSError as e:
        err = OutputWriteError(f"cannot write {path}: {e.strerror or e}")
        err.errno = e.errno  # kept for callers; the message stays one plain line
        raise err from e


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _write_outputs(res: Any, tgt: dict[str, Path], threshold: float | None,
                   overwrite: bool) -> None:
    """Write a scan's outputs; without ``overwrite`` none replaces a file that appeared
    meanwhile (another run writing into the same folder)."""
    from disyre.inference.detector import save_overlay_png

    writers: dict[str, Callable[[Path], None]] = {
        "map": lambda p: res.save_map(p),
        "score": lambda p: _write_text(p, f"{res.score:.6f}\n"),
        "restored": lambda p: res.save_restored(p),
        "mask": lambda p: res.save_mask(p, threshold),
        "png": lambda p: save_overlay_png(res, p, threshold),
    }
    for key, path in tgt.items():
        if key == "mask" and threshold is None:
            continue
        _write(path, writers[key], overwrite)


@dataclass
class DetectSummary:
    """What :func:`detect_files` did.

    Attributes:
        output_dir: The output folder.
        scans: Every input scan (all shards), sorted.
        shard: ``(i, n)``: this process handled every ``n``-th scan from the ``i``-th.
        written: Scans whose outputs were written by this call.
        skipped: Scans already done (``continue_``; their outputs read back whole).
        redone: ``(scan, reason)`` of scans whose existing outputs were damaged or partial.
        failed: ``(scan, message)`` of scans that could not be mapped or written.
        others: Non-NIfTI files of the input folder (skipped).
        broken_links: Broken symbolic links of the input folder (skipped).
        warnings: Warnings about the inputs and the thresholds.
        scores: Volume score of each scan written.
        threshold: The mask threshold and its source, if any.
        command: The command named in :meth:`report`.
    """

    output_dir: Path
    scans: list[Path]
    shard: tuple[int, int] = (0, 1)
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    redone: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)
    broken_links: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    scores: dict[Path, float] = field(default_factory=dict)
    threshold: ThresholdChoice | None = None
    command: str = "disyre detect"

    @property
    def assigned(self) -> list[Path]:
        """The scans of this shard."""
        i, n = self.shard
        return self.scans[i::n]

    @property
    def ok(self) -> bool:
        """Every scan of this shard was written or already done."""
        return not self.failed

    def report(self) -> str:
        """The summary ``disyre detect`` prints."""
        i, n = self.shard
        lines = [f"{self.command}: {len(self.written)} of {len(self.assigned)} scan(s) written "
                 f"to {self.output_dir}"
                 + (f", {len(self.skipped)} already done" if self.skipped else "")
                 + (f", {len(self.redone)} redone (damaged or partial outputs)"
                    if self.redone else "")
                 + (f" (shard {i}/{n})" if n > 1 else "")
                 + (f"; mask threshold {self.threshold.describe()}" if self.threshold else "")]
        if self.others:
            lines.append(f"skipped {len(self.others)} non-NIfTI file(s): "
                         + ", ".join(o.name for o in self.others))
        if self.broken_links:
            lines.append(f"skipped {len(self.broken_links)} broken symbolic link(s): "
                         + ", ".join(o.name for o in self.broken_links))
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s) about the inputs or thresholds "
                         "(see above)")
        if self.failed:
            lines.append(f"failed {len(self.failed)} scan(s):")
            lines += [f"  {e}" for _scan, e in self.failed]
        return "\n".join(lines)


def detect_files(inputs: str | Path, output_dir: str | Path,
                 detector: Any | Callable[[], Any], *,
                 checkpoint: str | Path | None = None,
                 mode: str = "pixel",
                 threshold: float | str | None = None,
                 thresholds_file: str | Path | None = None,
                 allow_threshold_mismatch: bool = False,
                 mask: str | Path | None = None,
                 save_restored: bool = False,
                 png: bool = False,
                 overwrite: bool = False,
                 continue_: bool = False,
                 shard: str | tuple[int, int] | None = None,
                 progress: bool = True,
                 predict: Predict | None = None) -> DetectSummary:
    """Anomaly maps (and scores, masks, overlays) of a NIfTI file or folder into a folder.

    Everything is checked before a model is loaded or a scan mapped: the inputs, the output
    names (never an input's, never two scans the same), existing outputs, the threshold and
    its file, the output folder's writability; then, with the detector, that the thresholds
    were fitted on maps made as these will be.

    Args:
        inputs: A NIfTI scan or a folder of them (other files and broken symbolic links are
            skipped with a warning and listed in the summary).
        output_dir: Output folder (created).
        detector: A :class:`~disyre.inference.Detector`, or a function without arguments
            returning one (called after the checks, so bad arguments fail before a model
            is loaded).
        checkpoint: The run or checkpoint folder the detector comes from: its run folder's
            ``thresholds.json`` is the default thresholds file, and its step is checked
            against the one the thresholds record.
        mode: ``pixel`` (maps), ``sample`` (``<name>.txt`` scores) or ``both``.
        threshold: Write ``<stem>_mask.nii.gz`` of ``map > threshold``: a number in [0, 1],
            or ``"fpr=0.01"`` (from ``thresholds_file``, else the checkpoint's run folder).
        thresholds_file: An explicit thresholds file for ``threshold="fpr=..."``.
        allow_threshold_mismatch: Apply thresholds fitted on maps made with other inference
            settings or another checkpoint (with a warning) instead of refusing.
        mask: Brain mask NIfTI of a single input scan (default: non-zero voxels).
        save_restored: Also write the restored images.
        png: Also write PNG overlays.
        overwrite: Replace existing outputs (all scans are computed).
        continue_: Skip scans whose outputs all exist and read back whole; redo the others.
        shard: ``"i/n"`` or ``(i, n)``: only every ``n``-th scan of the sorted list from the
            ``i``-th (default: torchrun's ``RANK``/``WORLD_SIZE``).
        progress: Show an overall ``x/N`` bar over the scans and one per scan.
        predict: How a scan is mapped, ``predict(detector, scan, progress=..., on_total=...)``
            (default :meth:`Detector.predict`; for raw heads pass
            ``disyre.preprocessing.predict_raw``).

    Returns:
        The :class:`DetectSummary` (``summary.ok`` is false if a scan failed).

    Raises:
        InputError: No input, or the only input scan cannot be read.
        OutputExistsError: Outputs exist (without ``overwrite``/``continue_``), an output
            would replace an input, or two scans would write one file.
        OutputWriteError: An output could not be written (names the file).
        ThresholdError: A bad threshold or thresholds file; ``ThresholdMismatchError`` if
            fitted on other maps.
        ValueError: Contradictory arguments.
    """
    inputs, out = Path(inputs), Path(output_dir)
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose from {', '.join(MODES)}")
    if overwrite and continue_:
        raise ValueError("overwrite and continue exclude each other: overwrite recomputes "
                         "every scan, continue skips the finished ones (--overwrite, "
                         "--continue)")
    if mask is not None and predict is not None:
        raise ValueError("a brain mask is used by the default predict only")
    listing = list_inputs(inputs)
    scans = listing.scans
    if mask is not None and len(scans) > 1:
        raise ValueError("a brain mask (--mask) applies to a single input scan, not a folder")
    for o in listing.others:
        log.warning("%s: not a NIfTI file, skipped", o)
    for b in listing.broken_links:
        log.warning("%s: broken symbolic link (its target %s does not exist), skipped",
                    b, os.readlink(b))
    rank, world = parse_shard(shard)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder")
    if inputs.is_dir() and out.resolve() == inputs.resolve():
        raise OutputExistsError(f"{out}: output folder is the input folder; maps would "
                                "replace scans")
    all_targets = {s: output_paths(s, out, mode=mode, save_restored=save_restored,
                                   mask=threshold is not None, png=png) for s in scans}
    _check_targets(all_targets, scans + ([Path(mask)] if mask is not None else []))
    summary = DetectSummary(out, scans, (rank, world), others=listing.others,
                            broken_links=listing.broken_links)
    targets = {s: all_targets[s] for s in summary.assigned}
    todo = pending_scans(summary, targets, overwrite=overwrite, continue_=continue_)
    choice = resolve_threshold(threshold, thresholds_file=thresholds_file,
                               checkpoint=checkpoint)
    summary.threshold = choice
    ensure_writable_dir(out)  # before any work: an unwritable folder fails now, not at the end

    det = detector if hasattr(detector, "predict") else detector()
    if choice is not None and choice.thresholds is not None:
        log.info("thresholds: %s (fpr=%g -> %.4g)", choice.path, choice.rate, choice.value)
        for msg in check_binding(choice.thresholds, det, checkpoint, source=choice.path,
                                 allow_mismatch=allow_threshold_mismatch):
            summary.warnings.append(msg)
            log.warning("%s", msg)
    maker = maps_maker(det, checkpoint) if mode != "sample" else {}
    log.info("detect: %d scan(s)%s, %s", len(todo),
             f" (shard {rank}/{world} of {len(scans)})" if world > 1 else "",
             describe_detector(det))
    if predict is None:
        def predict(d: Any, scan: Path, **kw: Any) -> Any:
            return d.predict(scan, mask=mask, **kw)

    value = choice.value if choice is not None else None

    def write(res: Any, scan: Path) -> list[Path]:
        _write_outputs(res, targets[scan], value, overwrite=overwrite or continue_)
        return list(targets[scan].values())

    map_scans(summary, todo, det, predict, write, progress=progress)
    maps = [s.name for s in summary.written if "map" in targets[s]]
    if maps:  # what made them, for `disyre evaluate --maps` to check a thresholds file
        try:
            write_maps_record(out, maps, maker, rank, world)
        except OSError as e:
            raise OutputWriteError(f"cannot write the record of the maps into {out}: "
                                   f"{e.strerror or e}") from e
    return summary


def restoration_text(inf: Any) -> str:
    """How the network restores a scan, in words (the startup line of ``disyre detect``).

    Example:
        >>> from disyre.config import InferenceConfig
        >>> restoration_text(InferenceConfig(method="walk", levels=[249], steps=25))
        'AnoDDPM walk from step 249 (25 network passes)'
    """
    if inf.method == "ensemble":
        return f"v2 ensemble, levels {list(inf.levels)}"
    if inf.method == "walk":
        return f"AnoDDPM walk from step {inf.levels[0]} ({inf.steps} network passes)"
    if inf.method == "patched":
        return f"patched DDPM at step {inf.levels[0]}"
    if inf.method == "multistep":
        return f"v1 multistep ({inf.steps} steps)"
    return f"{inf.method}, levels {list(inf.levels)}, {inf.steps} steps"


def describe_detector(det: Any) -> str:
    """The inference settings of ``det`` in one line (method, levels, window, device,
    precision), as ``disyre detect`` logs them."""
    inf = det.inference
    return "{}, window {}, device {}, precision {} ({})".format(
        restoration_text(inf), inf.window or "whole slice", det.device,
        det.precision.precision, det.precision.reason)


def pending_scans(summary: DetectSummary, targets: dict[Path, dict[str, Path]], *,
                  overwrite: bool = False, continue_: bool = False,
                  check: Callable[[Path, dict[str, Path]], str | None] = check_output
                  ) -> list[Path]:
    """The scans of ``targets`` (scan -> its outputs) still to map, in order.

    With ``continue_``, a scan whose outputs all exist and read back whole (``check``) is
    skipped (``summary.skipped``), one with some outputs but not all whole is redone
    (``summary.redone``, with a warning). Otherwise an existing output is refused unless
    ``overwrite``.

    Raises:
        OutputExistsError: Outputs exist, without ``overwrite`` or ``continue_``.
    """
    mine = list(targets)
    if not continue_:
        taken = [p for t in targets.values() for p in t.values() if p.exists()]
        if taken and not overwrite:
            raise OutputExistsError(
                f"{summary.output_dir}: already holds outputs ({taken[0].name}"
                + (f" and {len(taken) - 1} more" if len(taken) > 1 else "")
                + "); pass --overwrite to replace them or --continue to skip finished scans")
        return mine
    todo = []
    for s in mine:
        why = check(s, targets[s])
        if why is None:
            summary.skipped.append(s)
            continue
        todo.append(s)
        if any(p.exists() for p in targets[s].values()):
            summary.redone.append((s, why))
            log.warning("--continue: %s: %s; computing it again", s.name, why)
    if summary.skipped:
        log.info("--continue: %d of %d scan(s) already done (outputs read back whole), "
                 "skipped", len(summary.skipped), len(mine))
    return todo


def map_scans(summary: DetectSummary, todo: list[Path], det: Any, predict: Predict,
              write: Callable[[Any, Path], list[Path]], *, progress: bool = True) -> None:
    """Map every scan of ``todo`` and write its outputs (``write(result, scan)`` returns the
    files written), filling ``summary``.

    A scan that cannot be read or mapped, or whose outputs appeared meanwhile
    (:class:`OutputExistsError` from ``write``), is listed in ``summary.failed`` and the
    others go on; with a single input scan its error is raised instead. Warnings raised while
    a scan is mapped are logged and kept in ``summary.warnings``.
    """
    from tqdm import tqdm

    from disyre.inference.detector import DetectionError

    scans = summary.scans
    n_mine = len(summary.assigned)
    position = {s: i for i, s in enumerate(summary.assigned, 1)}
    overall = tqdm(total=n_mine, initial=len(summary.skipped), desc="scans", unit="scan",
                   position=0, dynamic_ncols=True, disable=not progress)
    try:
        for scan in todo:
            k = position[scan]  # its place in this shard's sorted list, redone or not
            bar = tqdm(desc=scan.name, unit="win", leave=False, position=1,
                       dynamic_ncols=True, disable=not progress)

            def _total(n: int, bar: Any = bar) -> None:
                bar.total = n
                bar.refresh()

            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    res = predict(det, scan, progress=bar.update, on_total=_total)
            except (InputError, DetectionError) as e:
                bar.close()
                if len(scans) == 1:
                    raise
                summary.failed.append((scan, str(e)))
                log.error("[%d/%d] %s", k, n_mine, e)
                overall.update()
                continue
            bar.close()
            for w in caught:
                msg = str(w.message)
                summary.warnings.append(msg)
                log.warning("%s", msg)
            try:
                written = write(res, scan)
            except OutputExistsError as e:
                summary.failed.append((scan, str(e)))
                log.error("[%d/%d] %s", k, n_mine, e)
                overall.update()
                del res
                continue
            summary.written.append(scan)
            summary.scores[scan] = float(res.score)
            overall.update()
            log.info("[%d/%d] %s: score %.4f -> %s", k, n_mine, scan.name, res.score,
                     ", ".join(p.name for p in written))
            del res, caught  # written: the next scan is mapped without this one's arrays
            from disyre.runtime import release_freed_memory

            release_freed_memory()  # nor with the memory they held
    finally:
        overall.close()
