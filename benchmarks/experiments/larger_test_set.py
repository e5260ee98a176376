"""A benchmark's trained methods on a larger lesioned test set of the same demo cohort.

The demo cohort holds 21 lesioned test subjects; its intervals are wide. The cohort generator
numbers subjects in a fixed order (training, validation, healthy test, older-looking healthy,
then the lesioned ones) and draws each from its own index, so a cohort with more lesioned
subjects has the same training, validation and healthy subjects and the same first lesioned
ones, followed by new lesioned subjects (same kinds in turn). This experiment writes that
cohort (``--lesioned``, default 48), checks that every subject of the original cohort came
out with the same draws and the same image (the trained models never saw a new subject),
preprocesses it with the benchmark's intensity settings, and evaluates every method of a
finished ``disyre benchmark`` folder on it as the benchmark does
(:func:`disyre.benchmark.evaluate_run`: thresholds on the healthy validation scans, the
benchmark's post-processing and inference settings). Nothing is retrained.

Prints per method: pixel AP [95 % CI], best Dice (oracle), Dice and lesion recall at the
1 % healthy threshold, FP blobs per healthy scan, the held-out and older healthy FPRs, and
detect + evaluate seconds (in all and per scan).

Usage::

    python -m benchmarks.experiments.larger_test_set --bench bench_baselines \\
        --cohort demo_out/cohort --lesioned 48 --out test48

Run it alone: the times are wall-clock.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.args import at_least, existing_dir, new_file

from .median_filter import num, pct, summary_row

log = logging.getLogger("larger_test_set")


def larger_cohort(cohort: Path, out: Path, lesioned: int, *, progress: bool = False) -> Any:
    """Write ``cohort``'s spec with ``lesioned`` lesioned test subjects to ``out`` and check
    that it extends ``cohort``: every original subject with the same draws and image.

    Returns:
        The :class:`~disyre.demo.cohort.Cohort` written (or reused).

    Raises:
        SystemExit: ``cohort`` is not a demo cohort, ``lesioned`` is smaller than its count, or
            an original subject came out different (one line, naming it).
    """
    import nibabel as nib

    from disyre.demo.cohort import CohortSpec, build_cohort

    meta_path = cohort / "cohort.json"
    if not meta_path.is_file():
        raise SystemExit(f"{cohort}: no cohort.json (not a demo cohort folder)")
    meta = json.loads(meta_path.read_text())
    spec = CohortSpec(**meta["key"]["spec"])
    if lesioned < spec.n_test_lesion:
        raise SystemExit(f"--lesioned {lesioned}: the cohort already has {spec.n_test_lesion}")
    big = build_cohort(dataclasses.replace(spec, n_test_lesion=lesioned), out,
                       progress=progress)
    new_meta = json.loads((out / "cohort.json").read_text())
    new_rows = {r["subject"]: r for r in new_meta["rows"]}
    for row in meta["rows"]:
        name = row["subject"]
        twin = new_rows.get(name)
        if twin is None or (twin["split"], twin["lesion_kind"]) != (row["split"],
                                                                    row["lesion_kind"]):
            raise SystemExit(f"{out}: subject {name} is not where {cohort} has it")
        if new_meta["subjects"][name] != meta["subjects"][name]:
            raise SystemExit(f"{out}: subject {name} drew other parameters than in {cohort}")
        a = np.asarray(nib.load(cohort / row["image"]).dataobj)
        b = np.asarray(nib.load(out / twin["image"]).dataobj)
        if not np.array_equal(a, b):
            raise SystemExit(f"{out / twin['image']}: differs from {cohort / row['image']}")
    return big


#: ``--post-processing`` choices: the protocols evaluated (``None``: each run's own setting)
PROTOCOLS: dict[str, list[str | None]] = {"own": [None], "shared": ["shared"],
                                          "published": ["published"],
                                          "both": ["published", "shared"]}


def measure(bench: Path, cohort: Path, out: Path, lesioned: int, *,
            methods: list[str] | None = None, median_filter: int | None = None,
            n_boot: int = 1000, seed: int = 0, device: str = "auto", progress: bool = False,
            post_processing: str = "own") -> dict[str, Any]:
    """Evaluate ``bench``'s methods on ``cohort`` grown to ``lesioned`` lesioned subjects.

    ``median_filter`` (voxels, 0 = none) replaces every method's own post-processing filter
    (``None``: each keeps the benchmark's). ``post_processing`` (a key of :data:`PROTOCOLS`)
    picks the protocols; with ``both`` each method has a ``(published)`` and a ``(shared)``
    row, from maps computed once.

    Example:
        >>> measure(Path("bench"), Path("demo_out/cohort"), Path("test48"), 48)  # doctest: +SKIP
    """
    from disyre.benchmark import evaluate_run_protocols
    from disyre.config import IntensityConfig
    from disyre.data.cache import prepare_cache
    from disyre.data.manifest import read_manifest

    marker = bench / "benchmark.json"
    if not marker.is_file():
        raise SystemExit(f"{bench}: no benchmark.json (not a finished disyre benchmark)")
    b = json.loads(marker.read_text())
    names = methods or list(b["methods"])
    unknown = [m for m in names if m not in b["methods"]]
    if unknown:
        raise SystemExit(f"{bench}: has no method {', '.join(unknown)} (has {b['methods']})")
    big = larger_cohort(cohort, out / "cohort", lesioned, progress=progress)
    intensity = IntensityConfig(**b["run"]["intensity"])
    cache = prepare_cache(read_manifest(big.manifest), out / "cache", intensity,
                          progress=progress)
    n_scans = sum(e.split in ("val", "test", "transfer") for e in cache.entries)
    rows = []
    for name in names:
        own = int(b["run"]["inference"]["median_filter"])
        inference = {"median_filter": own if median_filter is None else median_filter}
        target = bench / name / ("reference.npz" if name == "reference" else "run")
        protocols = PROTOCOLS[post_processing]
        t0 = time.perf_counter()
        results = evaluate_run_protocols(target, cache, protocols, inference=inference,
                                         n_boot=n_boot, seed=seed, device=device,
                                         progress=progress)
        secs = time.perf_counter() - t0  # every protocol's evaluation: the maps once
        for protocol, (res, extra) in results.items():
            label = name if len(protocols) == 1 else f"{name} ({protocol})"
            rows.append({"method": label, **summary_row(res, extra, secs), "n_scans": n_scans})
            log.info("%s: AP %.4f (%.0f s)", label, res.pixel.ap, secs)
    return {"bench": str(bench), "cohort": str(big.root), "contrast": big.spec.contrast,
            "steps": b["steps"], "n_boot": n_boot, "rows": rows,
            "post_processing": post_processing,
            "median_filter": (int(b["run"]["inference"]["median_filter"])
                              if median_filter is None else median_filter)}


def table(result: dict[str, Any]) -> str:
    """The rows as a Markdown table."""
    first = result["rows"][0]
    lines = [f"{result['bench']} ({result['contrast']}, {result['steps']} steps) on "
             f"{result['cohort']}: {first['n_lesioned']} lesioned test scans, "
             f"{first['n_scans']} scans mapped per method, median filter "
             f"{result['median_filter'] or 'none'}, {result['n_boot']} resamples", "",
             "| method | pixel AP [95 % CI] | best Dice (oracle) | Dice @ 1 % | lesion recall "
             "@ 1 % | FP blobs / healthy scan @ 1 % | held-out / older FPR @ 1 % | scan AUROC | "
             "detect+eval s (per scan) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ci = r["ap_ci"]
        rec = r["lesion_recall_1pct_ci"]
        rec_s = num(r["lesion_recall_1pct"]) + ("" if not rec else
                                                f" [{rec[0]:.3f}, {rec[1]:.3f}]")
        lines.append(f"| {r['method']} | {r['ap']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | "
                     f"{num(r['best_dice_oracle'])} | {num(r['dice_1pct'])} | {rec_s} | "
                     f"{num(r['fp_blobs_per_healthy_scan_1pct'], '.1f')} | "
                     f"{pct(r['heldout_fpr_1pct'])} / {pct(r['transfer_fpr_1pct'])} | "
                     f"{num(r.get('scan_auroc'))} | "
                     f"{r['seconds']:.0f} ({r['seconds'] / max(r['n_scans'], 1):.1f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", type=existing_dir, required=True,
                   help="a finished `disyre benchmark` folder trained on --cohort")
    p.add_argument("--cohort", type=existing_dir, required=True,
                   help="the demo cohort folder the benchmark's manifest came from")
    p.add_argument("--lesioned", type=at_least(1), default=48, help="lesioned test subjects "
                   "(default 48)")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for the larger cohort and its cache")
    p.add_argument("--methods", default=None, help="comma-separated subset of the "
                   "benchmark's methods (default all)")
    p.add_argument("--median-filter", type=at_least(0), default=None, help="median filter of every "
                   "method's map in voxels, 0 = none (default: the benchmark's)")
    p.add_argument("--n-boot", type=at_least(0), default=1000, help="bootstrap resamples")
    p.add_argument("--post-processing", choices=sorted(PROTOCOLS), default="own",
                   help="each run's own post-processing (default), shared, published, or both "
                        "(two rows per method, the maps computed once)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=new_file, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    methods = args.methods.split(",") if args.methods else None
    result = measure(args.bench, args.cohort, args.out, args.lesioned, methods=methods,
                     median_filter=args.median_filter, n_boot=args.n_boot, device=args.device,
                     post_processing=args.post_processing)
    print(table(result))
    if args.json is not None:
        from disyre.io_utils import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
