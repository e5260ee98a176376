"""A 3D median filter of the anomaly map: does it help? Measured on a finished demo.

Re-evaluates the demo's trained DISYRE run (``<demo>/benchmark/dag/run``) on the demo's own
cache, as the benchmark evaluates it (:func:`disyre.benchmark.evaluate_run`: thresholds fit
on the healthy validation scans, lesioned and healthy test scans, the out-of-range healthy
scans), once per filter size (0 = none), and prints pixel AP with its bootstrap interval, the
paired interval of the AP difference against no filter (the same volumes in every
resample), Dice and lesion recall at the 1 % healthy threshold, the healthy FPRs and the time
of detect + evaluate. The network runs again for every size: the filter is measured where the
library applies it (``inference.median_filter``, after the map is blended).

Usage::

    python -m benchmarks.experiments.median_filter --demo demo_out --sizes 0,3,5
    python -m benchmarks.experiments.median_filter --demo demo_t1 --json mf_t1.json

Run it alone: the times are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from benchmarks.args import at_least, existing_dir, int_list, new_file

log = logging.getLogger("median_filter")


def summary_row(res: Any, extra: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The table's figures of one :func:`disyre.benchmark.evaluate_run` result (1 % rows)."""
    at = res.lesion_wise.get("at", {}).get("0.01", {})
    return {"ap": res.pixel.ap, "ap_ci": list(res.ci.get("ap", ())),
            "best_dice_oracle": res.pixel.best_dice,
            "dice_1pct": res.calibrated.get(0.01, {}).get("dice"),
            "lesion_recall_1pct": at.get("recall"), "lesion_recall_1pct_ci": at.get("recall_ci"),
            "fp_blobs_per_healthy_scan_1pct": at.get("fp_per_healthy_scan"),
            "heldout_fpr_1pct": res.healthy_heldout.get(0.01, {}).get("fpr"),
            "transfer_fpr_1pct": extra.get("healthy_transfer", {}).get("0.01", {}).get("fpr"),
            "scan_auroc": (res.volume_level.get("top_1cm3") or {}).get("auroc"),
            "n_lesioned": sum(c.n_lesion > 0 for c in res.cases), "seconds": round(seconds, 1)}


def pct(v: Any) -> str:
    """A rate as a percentage, ``-`` when missing."""
    return "-" if v is None else f"{100 * v:.2f} %"


def num(v: Any, fmt: str = ".3f") -> str:
    """A number, ``-`` when missing."""
    return "-" if v is None else format(v, fmt)


def measure(demo: Path, sizes: list[int], *, n_boot: int = 1000, seed: int = 0,
            device: str = "auto", progress: bool = False) -> dict[str, Any]:
    """Evaluate the demo's DISYRE run once per median-filter size; returns the table's rows.

    Example:
        >>> rows = measure(Path("demo_out"), [0, 3])  # doctest: +SKIP
    """
    from disyre.benchmark import evaluate_run
    from disyre.data.cache import VolumeCache
    from disyre.evaluation.metrics import paired_bootstrap_ap

    cache = VolumeCache.open(demo / "cache")
    run = demo / "benchmark" / "dag" / "run"
    rows: dict[int, dict[str, Any]] = {}
    hists: dict[int, tuple[Any, Any]] = {}
    for k in sizes:
        t0 = time.perf_counter()
        res, extra = evaluate_run(run, cache, inference={"median_filter": k}, n_boot=n_boot,
                                  seed=seed, device=device, progress=progress)
        secs = time.perf_counter() - t0
        rows[k] = {"median_filter": k, **summary_row(res, extra, secs)}
        hists[k] = (res.volume_pos_hist, res.volume_neg_hist)
        log.info("median_filter=%d: AP %.4f (%.0f s)", k, res.pixel.ap, secs)
    base = sizes[0]
    for k in sizes[1:]:
        rows[k]["vs_first"] = paired_bootstrap_ap(*hists[base], *hists[k], n_boot=n_boot,
                                                  seed=seed)
    cohort = json.loads((demo / "demo.json").read_text())["settings"]["cohort"]
    return {"demo": str(demo), "contrast": cohort.get("contrast"), "n_boot": n_boot,
            "rows": [rows[k] for k in sizes]}


def table(result: dict[str, Any]) -> str:
    """The rows as a Markdown table."""
    lines = [f"{result['demo']} ({result['contrast']}), {result['rows'][0]['n_lesioned']} "
             f"lesioned test scans, {result['n_boot']} resamples", "",
             "| median filter | pixel AP [95 % CI] | AP minus no filter [paired 95 % CI] | "
             "best Dice (oracle) | Dice @ 1 % | lesion recall @ 1 % | FP blobs / healthy scan "
             "@ 1 % | held-out FPR @ 1 % | older FPR @ 1 % | detect+eval s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ci = r["ap_ci"]
        vs = r.get("vs_first")
        diff = "-" if vs is None else (f"{vs['diff']:+.3f} [{vs['diff_low']:+.3f}, "
                                       f"{vs['diff_high']:+.3f}]")
        lines.append(f"| {r['median_filter'] or 'none'} | {r['ap']:.3f} [{ci[0]:.3f}, "
                     f"{ci[1]:.3f}] | {diff} | {num(r['best_dice_oracle'])} | "
                     f"{num(r['dice_1pct'])} | {num(r['lesion_recall_1pct'])} | "
                     f"{num(r['fp_blobs_per_healthy_scan_1pct'])} | "
                     f"{pct(r['heldout_fpr_1pct'])} | {pct(r['transfer_fpr_1pct'])} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", type=existing_dir, required=True,
                   help="a finished `disyre demo` folder (its cache/ and benchmark/dag/run)")
    p.add_argument("--sizes", type=int_list(0), default="0,3",
                   help="filter sizes, the first the reference "
                   "(default 0,3)")
    p.add_argument("--n-boot", type=at_least(0), default=1000, help="bootstrap resamples")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=new_file, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sizes = args.sizes
    result = measure(args.demo, sizes, n_boot=args.n_boot, device=args.device)
    print(table(result))
    if args.json is not None:
        from disyre.io_utils import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
