"""``disyre detect``: anomaly maps for a NIfTI scan or a folder of them (MOOD-compatible).

Outputs (in folder ``-o``), for an input ``case.nii.gz``:

- pixel mode: ``case.nii.gz``, a float32 map in [0, 1] of exactly the input's shape and affine;
- sample mode: ``case.nii.gz.txt``, one number in [0, 1] (the volume score);
- ``case_restored.nii.gz`` (``--save-restored``), ``case_mask.nii.gz`` (``--threshold``),
  ``case_overlay.png`` (``--png``).

Examples::

    disyre detect -i scans/ -o maps/ --checkpoint runs/t2
    disyre detect -i sub-01.nii.gz -o out/ --checkpoint runs/t2 --mode both --png \\
        --threshold fpr=0.01
    disyre detect -i scans/ -o maps/ --checkpoint runs/t2 --shard 0/2   # and --shard 1/2
    disyre detect -i raw_heads/ -o maps/ --checkpoint runs/t1 --preprocess  # raw grid maps
    torchrun --nproc_per_node 4 $(which disyre) detect -i scans/ -o maps/ --checkpoint runs/t2
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
from pathlib import Path

from disyre.cli import add_overrides_argument, apply_inference_overrides
from disyre.data.nifti import NIFTI_SUFFIXES

log = logging.getLogger(__name__)

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``disyre detect``."""
    p = subparsers.add_parser(
        "detect",
        help="anomaly maps / scores for NIfTI scans with a trained model",
        description="Restore each scan with the trained network and write its anomaly map on "
        "the scan's own grid (MOOD contract: same file names in pixel mode, <name>.txt in "
        "sample mode).",
    )
    p.add_argument("-i", "--input", type=Path, required=True,
                   help="a NIfTI scan or a folder of them")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--checkpoint", type=Path, required=True,
                   help="run folder (newest checkpoint) or checkpoint folder")
    p.add_argument("--mode", choices=["pixel", "sample", "both"], default="pixel",
                   help="pixel: voxel maps; sample: one score per scan; both (default pixel)")
    p.add_argument("--mask", type=Path, default=None,
                   help="brain mask NIfTI (single-scan input only; default non-zero voxels)")
    p.add_argument("--preprocess", action="store_true",
                   help="raw head scans: run the checkpoint's preprocessing recipe (skull "
                   "strip, register), write maps on the raw scans' own grids")
    p.add_argument("--save-restored", action="store_true", help="also write restored images")
    p.add_argument("--png", action="store_true", help="also write PNG overlays")
    p.add_argument("--html", action="store_true", help="also write report.html: every scan "
                   "and its map in the browser (pixel mode)")
    p.add_argument("--threshold", default=None, metavar="T|fpr=F",
                   help="write a binary mask of map > T; 'fpr=0.01' takes T from the "
                   "thresholds file (calibrated on healthy scans)")
    p.add_argument("--thresholds-file", type=Path, default=None,
                   help="thresholds JSON (default: thresholds.json next to the checkpoint)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="process only the I-th of N parts of the sorted file list "
                   "(default from torchrun's RANK/WORLD_SIZE)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--continue", dest="continue_run", action="store_true",
                   help="skip scans whose outputs all exist (after an interrupted run); the "
                   "others are computed and their outputs written")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                   help="autocast precision (default: the checkpoint's inference.precision)")
    add_overrides_argument(p, "inference.levels=[0,25,50,75]")
    p.set_defaults(func=run)


def _stem(name: str) -> str:
    low = name.lower()
    for end in (".nii.gz", ".nii"):
        if low.endswith(end):
            return name[: -len(end)]
    return name


def list_inputs(path: Path) -> tuple[list[Path], list[Path]]:
    """``(NIfTI files, other files)`` of a folder (sorted), or ``([path], [])`` for a file."""
    from disyre.cli import CLIError

    if not path.exists():
        raise CLIError(f"{path}: input not found")
    if path.is_file():
        if not path.name.lower().endswith(NIFTI_SUFFIXES):
            raise CLIError(f"{path}: not a NIfTI file (expected .nii or .nii.gz)")
        return [path], []
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    scans = [p for p in files if p.name.lower().endswith(NIFTI_SUFFIXES)]
    others = [p for p in files if p not in scans]
    if not scans:
        raise CLIError(f"{path}: no NIfTI files (.nii/.nii.gz) in the folder")
    return scans, others


def parse_shard(text: str | None, env: dict[str, str] | None = None) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)``; without it, torchrun's ``RANK``/``WORLD_SIZE`` or ``(0, 1)``."""
    from disyre.cli import CLIError

    env = os.environ if env is None else env
    if text is None:
        return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1))
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError as e:
        raise CLIError(f"--shard {text!r}: expected I/N, e.g. 0/2") from e
    if not (n >= 1 and 0 <= i < n):
        raise CLIError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


def resolve_threshold(text: str | None, thresholds_file: Path | None,
                      checkpoint: Path) -> float | None:
    """The binarisation threshold of ``--threshold`` (a number or ``fpr=F``)."""
    from disyre.cli import CLIError

    if text is None:
        return None
    if not text.startswith("fpr="):
        try:
            t = float(text)
        except ValueError as e:
            raise CLIError(f"--threshold {text!r}: expected a number or fpr=RATE") from e
        if not 0 <= t <= 1:
            raise CLIError(f"--threshold {t}: maps lie in [0, 1]; give a value in [0, 1]")
        return t
    from disyre.evaluation.thresholds import load_thresholds

    try:
        rate = float(text[4:])
    except ValueError as e:
        raise CLIError(f"--threshold {text!r}: expected fpr=RATE, e.g. fpr=0.01") from e
    if thresholds_file is None:
        cands = [checkpoint / "thresholds.json", checkpoint.parent / "thresholds.json",
                 checkpoint.parent.parent / "thresholds.json"]
        found = [c for c in cands if c.is_file()]
        if not found:
            raise CLIError(f"{checkpoint / 'thresholds.json'}: no thresholds file next to the "
                           "checkpoint; run `disyre evaluate` on healthy scans or pass "
                           "--thresholds-file")
        thresholds_file = found[0]
    th = load_thresholds(thresholds_file)
    for f, t in th.fpr.items():
        if abs(f - rate) < 1e-9:
            return float(t)
    raise CLIError(f"{thresholds_file}: no threshold for fpr={rate:g} (has "
                   f"{', '.join(f'{f:g}' for f in sorted(th.fpr))})")


def _outputs(scan: Path, out: Path, args: argparse.Namespace) -> dict[str, Path]:
    stem = _stem(scan.name)
    o: dict[str, Path] = {}
    if args.mode in ("pixel", "both"):
        o["map"] = out / scan.name
    if args.mode in ("sample", "both"):
        o["score"] = out / f"{scan.name}.txt"
    if args.save_restored:
        o["restored"] = out / f"{stem}_restored.nii.gz"
    if args.threshold is not None:
        o["mask"] = out / f"{stem}_mask.nii.gz"
    if args.png:
        o["png"] = out / f"{stem}_overlay.png"
    return o


def _device(arg: str) -> str:
    """Under torchrun with CUDA, each process takes its ``LOCAL_RANK`` GPU."""
    import torch

    if arg == "auto" and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return arg


def _check_targets(targets: dict[Path, dict[str, Path]], inputs: list[Path]) -> None:
    """Refuse outputs that would replace an input, or that two scans would both write."""
    from disyre.cli import CLIError

    given = {p.resolve(): p for p in inputs}
    owner: dict[Path, Path] = {}
    for scan, tgt in targets.items():
        for p in tgt.values():
            r = p.resolve()
            if r in given:
                raise CLIError(f"{p}: output would replace the input {given[r]}; choose another "
                               "output folder")
            if r in owner:
                raise CLIError(f"{owner[r].name} and {scan.name} would both write {p.name}; "
                               "rename one of them or detect them into different folders")
            owner[r] = scan


def _complete(scan: Path, tgt: dict[str, Path]) -> bool:
    """All outputs of ``scan`` exist, and its NIfTI outputs have the scan's shape."""
    import nibabel as nib

    if not all(p.is_file() and p.stat().st_size > 0 for p in tgt.values()):
        return False
    try:
        shape = nib.load(str(scan)).shape[:3]
        if any(nib.load(str(tgt[k])).shape[:3] != shape
               for k in ("map", "restored", "mask") if k in tgt):
            return False
        if "score" in tgt:
            float(tgt["score"].read_text())
    except Exception:  # unreadable output: redo the scan
        return False
    return True


def _write_outputs(res: object, tgt: dict[str, Path], threshold: float | None,
                   overwrite: bool) -> None:
    """Write a scan's outputs; without ``overwrite`` none replaces a file that appeared
    meanwhile (another run writing into the same folder)."""
    from disyre.inference import save_overlay_png
    from disyre.io_utils import atomic_path

    writers = {
        "map": lambda p: res.save_map(p),  # type: ignore[attr-defined]
        "score": lambda p: p.write_text(f"{res.score:.6f}\n"),  # type: ignore[attr-defined]
        "restored": lambda p: res.save_restored(p),  # type: ignore[attr-defined]
        "mask": lambda p: res.save_mask(p, threshold),  # type: ignore[attr-defined]
        "png": lambda p: save_overlay_png(res, p, threshold),  # type: ignore[arg-type]
    }
    for key, path in tgt.items():
        if key == "mask" and threshold is None:
            continue
        with atomic_path(path, overwrite=overwrite) as tmp:
            writers[key](tmp)


def run(args: argparse.Namespace) -> int:
    """Run ``disyre detect``; returns the exit status."""
    from tqdm import tqdm

    from disyre.cli import CLIError
    from disyre.data.nifti import InputError
    from disyre.inference import DetectionError, Detector
    from disyre.io_utils import OutputExistsError, ensure_writable_dir

    scans, others = list_inputs(args.input)
    if args.mask is not None and len(scans) > 1:
        raise CLIError("--mask applies to a single input scan, not a folder")
    if args.overwrite and args.continue_run:
        raise CLIError("--overwrite and --continue exclude each other: --overwrite recomputes "
                       "every scan, --continue skips the finished ones")
    if args.mask is not None and args.preprocess:
        raise CLIError("--mask and --preprocess exclude each other (skull stripping finds "
                       "the brain)")
    if args.html and args.mode == "sample":
        raise CLIError("--html shows the maps: use --mode pixel or both")
    for o in others:
        log.warning("%s: not a NIfTI file, skipped", o)
    rank, world = parse_shard(args.shard)
    out = args.output
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder")
    if args.input.is_dir() and out.resolve() == args.input.resolve():
        raise CLIError(f"{out}: output folder is the input folder; maps would replace scans")
    all_targets = {s: _outputs(s, out, args) for s in scans}
    _check_targets(all_targets, scans + ([args.mask] if args.mask is not None else []))
    mine = scans[rank::world]
    targets = {s: all_targets[s] for s in mine}
    todo = mine
    if args.continue_run:
        todo = [s for s in mine if not _complete(s, targets[s])]
        if len(todo) < len(mine):
            log.info("--continue: %d of %d scan(s) already done, skipped",
                     len(mine) - len(todo), len(mine))
    else:
        taken = [p for t in targets.values() for p in t.values() if p.exists()]
        if taken and not args.overwrite:
            raise OutputExistsError(
                f"{out}: already holds outputs ({taken[0].name}"
                + (f" and {len(taken) - 1} more" if len(taken) > 1 else "")
                + "); pass --overwrite to replace them or --continue to skip finished scans")
    threshold = resolve_threshold(args.threshold, args.thresholds_file, args.checkpoint)
    ensure_writable_dir(out)  # before any work: an unwritable folder fails now, not at the end
    det = Detector.from_checkpoint(args.checkpoint, device=_device(args.device))
    apply_inference_overrides(det, args.overrides)
    if args.precision is not None:
        det.cfg.inference.precision = args.precision
    inf = det.inference
    log.info("detect: %d scan(s)%s, %s, levels %s, window %s, device %s, precision %s (%s)",
             len(todo), f" (shard {rank}/{world} of {len(scans)})" if world > 1 else "",
             "v2 ensemble" if inf.method == "ensemble" else f"v1 multistep ({inf.steps} steps)",
             inf.levels if inf.method == "ensemble" else "-", inf.window or "whole slice",
             det.device, det.precision.precision, det.precision.reason)

    failed: list[tuple[Path, str]] = []
    warned: list[str] = []
    for scan in todo:
        tgt = targets[scan]
        bar = tqdm(desc=scan.name, unit="win", leave=False, dynamic_ncols=True)

        def _total(n: int, bar: tqdm = bar) -> None:
            bar.total = n
            bar.refresh()

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = det.predict(scan, mask=args.mask, progress=bar.update, on_total=_total,
                                  preprocess=args.preprocess)
        except (InputError, DetectionError) as e:
            bar.close()
            if len(scans) == 1:
                raise
            failed.append((scan, str(e)))
            log.error("%s", e)
            continue
        bar.close()
        for w in caught:
            msg = str(w.message)
            warned.append(msg)
            log.warning("%s", msg)
        try:
            _write_outputs(res, tgt, threshold, overwrite=args.overwrite or args.continue_run)
        except OutputExistsError as e:
            failed.append((scan, str(e)))
            log.error("%s", e)
            continue
        log.info("%s: score %.4f -> %s", scan.name, res.score,
                 ", ".join(p.name for p in tgt.values()))

    if args.html:
        from disyre.evaluation.html import write_detect_report

        print("report: " + str(write_detect_report(
            out, mine, checkpoint=args.checkpoint, thresholds_file=args.thresholds_file,
            post_processing={"median_filter": det.cfg.inference.median_filter},
            overwrite=args.overwrite or args.continue_run,
            name="report.html" if world == 1 else f"report_shard{rank}of{world}.html")))
    done = len(todo) - len(failed)
    skipped = len(mine) - len(todo)
    print(f"disyre detect: {done} of {len(mine)} scan(s) written to {out}"
          + (f", {skipped} already done" if skipped else "")
          + (f" (shard {rank}/{world})" if world > 1 else "")
          + (f"; mask threshold {threshold:.4g}" if threshold is not None else ""))
    if others:
        print(f"skipped {len(others)} non-NIfTI file(s): " + ", ".join(o.name for o in others))
    if warned:
        print(f"{len(warned)} warning(s) about the inputs (see above)")
    if failed:
        print(f"failed {len(failed)} scan(s):")
        for _scan, e in failed:
            print(f"  {e}")
        return 1
    return 0
