"""Several ``disyre benchmark`` folders of one cohort as one comparison.

Methods trained to their plateau take very different times; running one benchmark per
method (side by side, or on different machines) and combining them afterwards is the same
comparison as one benchmark of all of them, provided every folder used the same cache,
splits, seed and shared settings. This reads each folder's ``benchmark.json``, refuses
folders that differ in any of those (one line naming the folder and the difference) or that
repeat a method, and prints one Markdown comparison:

- per method and post-processing protocol: the stopping step and why, pixel AP [95 % CI],
  best Dice (oracle), Dice and lesion recall at the 1 % healthy threshold, false-positive
  blobs per healthy scan, held-out healthy FPR, scan-level AUROC, train and detect seconds;
- where each method stopped (its best validation loss) and pixel AP by training budget (the
  checkpoints kept at ``--eval-steps``), with the two figures written to ``--figures``.

Usage::

    python -m benchmarks.experiments.combine_benchmarks --bench plateau/dag plateau/dae \\
        --figures docs/img/plateau_t2 --markdown plateau_t2.txt

Every argument is checked before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from benchmarks.args import existing_dir, existing_file, new_file

from .median_filter import num, pct


def _data(meta: dict[str, Any]) -> dict[str, Any]:
    """What every combined benchmark must share: the scans and how they were read."""
    return {"splits": meta.get("splits"), "seed": meta.get("seed"),
            "intensity": (meta.get("run") or {}).get("intensity")}


def _training(meta: dict[str, Any]) -> dict[str, Any]:
    """What benchmarks of learned methods must share besides (the method sets its own
    corruption, objective and inference recipe)."""
    run = meta.get("run") or {}
    train = {k: v for k, v in (run.get("train") or {}).items()
             if k not in ("objective", "device")}
    return {"steps": meta.get("steps"), "patience": meta.get("patience"),
            "min_delta": meta.get("min_delta"), "eval_steps": meta.get("eval_steps"),
            "train": train, "sampler": run.get("sampler"), "model": run.get("model")}


def _learned(meta: dict[str, Any]) -> bool:
    return any(m != "reference" for m in meta.get("methods", []))


def load(benches: list[Path]) -> list[dict[str, Any]]:
    """Each folder's ``benchmark.json`` (with ``"folder"``), checked to be combinable.

    Raises:
        SystemExit: A folder is not a finished benchmark, differs from the first in a shared
            setting, or repeats a method (one line).
    """
    metas = []
    for b in benches:
        marker = b / "benchmark.json"
        if not marker.is_file():
            raise SystemExit(f"{b}: no benchmark.json (not a finished disyre benchmark)")
        meta = json.loads(marker.read_text())
        meta["folder"] = str(b)
        metas.append(meta)
    learned = [m for m in metas if _learned(m)]
    seen: dict[str, str] = {}
    for meta in metas:
        checks = [(_data, metas[0])] + ([(_training, learned[0])] if _learned(meta) else [])
        for part, ref in checks:
            mine, theirs = part(meta), part(ref)
            diff = [k for k in theirs if mine.get(k) != theirs[k]]
            if diff:
                raise SystemExit(f"{meta['folder']}: differs from {ref['folder']} in "
                                 f"{', '.join(diff)}: not one comparison")
        for m in meta["methods"]:
            if m in seen:
                raise SystemExit(f"{meta['folder']}: method {m} is also in {seen[m]}")
            seen[m] = meta["folder"]
    return metas


def rows(metas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method and protocol: the benchmark's summary, timings and stopping."""
    out = []
    for meta in metas:
        for r in meta["summary"]:
            name = r["method"].split(" (")[0]
            stop = (meta.get("stopping") or {}).get(name) or {}
            out.append({**r, **(meta.get("timings") or {}).get(r["method"], {}),
                        "stop_step": stop.get("step"), "stop_reason": stop.get("reason"),
                        "folder": meta["folder"]})
    return out


def table(rs: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = ["| method | stopped at | pixel AP [95 % CI] | best Dice (oracle) | Dice @ 1 % | "
             "lesion recall @ 1 % | FP blobs / healthy scan @ 1 % | held-out FPR @ 1 % | "
             "scan AUROC | train s | detect s |", "|---|" + "---|" * 10]
    for r in rs:
        ci = r.get("pixel_ap_ci") or [None, None]
        ci_s = "" if ci[0] is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"
        stop = "-" if r.get("stop_step") is None else f"{r['stop_step']} ({r['stop_reason']})"
        lines.append(f"| {r['method']} | {stop} | {num(r.get('pixel_ap'))}{ci_s} | "
                     f"{num(r.get('best_dice_oracle'))} | {num(r.get('dice_at_1pct'))} | "
                     f"{num(r.get('lesion_recall_at_1pct'))} | "
                     f"{num(r.get('fp_blobs_per_healthy_scan_at_1pct'), '.1f')} | "
                     f"{pct(r.get('heldout_fpr_at_1pct'))} | {num(r.get('scan_auroc'))} | "
                     f"{num(r.get('train_s'), '.0f')} | {num(r.get('detect_s'), '.0f')} |")
    return "\n".join(lines)


def load_kept(files: list[Path], methods: set[str]) -> dict[str, dict[str, Any]]:
    """Runs stopped before their benchmark finished: each ``kept_steps`` JSON's method ->
    ``{"stopping": its stop record (reason ``interrupted``), "budget": step -> AP}``.

    Raises:
        SystemExit: A file is not a ``kept_steps`` result, or its method is already in a
            benchmark or another file (one line).
    """
    from disyre.benchmark import stop_record

    out: dict[str, dict[str, Any]] = {}
    for f in files:
        try:
            rec = json.loads(f.read_text())
            run, method, ap = Path(rec["run"]), rec["method"], rec["ap"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"{f}: not a kept_steps result ({e})") from e
        if method in methods or method in out:
            raise SystemExit(f"{f}: method {method} is already in the comparison")
        stop = stop_record(run) if run.is_dir() else {"step": None, "curve": []}
        out[method] = {"stopping": {**stop, "reason": "interrupted"}, "budget": ap}
    return out


def combine(benches: list[Path], figures: Path, md: Path | None = None,
            kept: list[Path] | None = None) -> str:
    """The combined Markdown (figures written to ``figures``, linked relative to ``md``'s
    folder, or to the working folder without ``md``); ``kept``: ``kept_steps`` results of
    runs stopped before their benchmark finished (their curves and budgets, no table row)."""
    from disyre.benchmark import plateau_notes, write_plateau_figures

    metas = load(benches)
    rs = rows(metas)
    stopping: dict[str, Any] = {}
    budget: dict[str, Any] = {}
    final_ap: dict[str, float] = {}
    for meta in metas:
        stopping.update(meta.get("stopping") or {})
        budget.update(meta.get("budget") or {})
        for name in meta.get("stopping") or {}:
            first = next(r for r in meta["summary"] if r["method"].split(" (")[0] == name)
            final_ap[name] = first["pixel_ap"]
    extra = load_kept(kept or [], {m for meta in metas for m in meta["methods"]})
    for name, rec in extra.items():
        stopping[name] = rec["stopping"]
        budget[name] = rec["budget"]
    write_plateau_figures(figures, stopping, budget, final_ap)
    rel = Path(os.path.relpath(figures, (md.parent if md is not None else Path.cwd())))
    m0 = metas[0]
    sp = m0.get("splits") or {}
    head = (f"{len(metas)} benchmark(s): {', '.join(x['folder'] for x in metas)}; "
            f"{sp.get('test_lesion')} lesioned and {sp.get('test_healthy')} healthy test scans, "
            f"{sp.get('val')} healthy validation scans; step cap {m0.get('steps')}, patience "
            f"{m0.get('patience')}, min_delta {m0.get('min_delta')}, seed {m0.get('seed')}")
    notes = [f"*{n}: stopped at step {r['stopping'].get('step')} before its benchmark "
             "finished (`interrupted`); its kept checkpoints evaluated by "
             "`benchmarks.experiments.kept_steps`, no row above.*" for n, r in extra.items()]
    return "\n".join([head, "", table(rs), "", *notes, *([""] if notes else []),
                      *plateau_notes(stopping, budget, final_ap, figures=rel.as_posix())])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", type=existing_dir, nargs="+", required=True,
                   help="finished `disyre benchmark` folders of one cohort")
    p.add_argument("--figures", type=Path, required=True,
                   help="folder for validation_loss.png and ap_by_step.png")
    p.add_argument("--kept", type=existing_file, nargs="*", default=[],
                   help="`kept_steps --json` results of runs stopped before their benchmark "
                        "finished (their budget curves join the figures)")
    p.add_argument("--markdown", type=new_file, default=None, help="also write the Markdown here")
    p.add_argument("--overwrite", action="store_true", help="replace --markdown")
    args = p.parse_args(argv)
    if args.markdown is not None and args.markdown.exists() and not args.overwrite:
        raise SystemExit(f"--markdown {args.markdown}: exists; pass --overwrite to replace it")
    metas = load(args.bench)  # every input checked before anything is written
    load_kept(args.kept, {m for meta in metas for m in meta["methods"]})
    text = combine(args.bench, args.figures, args.markdown, args.kept)
    print(text)
    if args.markdown is not None:
        from disyre.io_utils import atomic_write_text

        atomic_write_text(args.markdown, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
