"""Fidelity ablation: what each difference from the authors' recipe does to the demo results.

Rows (DISYRE v2, ``dag``, trained and evaluated the same way on the demo cohort):

- ``project as it was``: all four switches on their earlier values
  (``intensity.scaling=brain``, ``corruption.bias_selection=single``,
  ``corruption.shapes=legacy``, ``corruption.augment_recipe=legacy``);
- ``authors' recipe``: all four on the authors' values (the defaults);
- one row per switch: the authors' recipe with that one switch set back to its earlier value.

The v1 walk's levels (multi-step inference only) and the evaluation rules (every lesion
voxel counts, one brain definition) are the same in every row: the demo detects with the v2
ensemble, and every row is evaluated by today's harness.

Columns: pixel AP with its 95 % bootstrap interval (volumes resampled), best Dice (an oracle:
threshold chosen on the test labels) with its interval, Dice at the threshold giving 1 %
false positives on the healthy validation scans, and the false-positive rate of the held-out
healthy test scans at that threshold.

Each contrast gets its own cohort (``disyre.demo.cohort``, the demo's default size unless
overridden) and one preprocessing cache per intensity scaling. Everything is written under
``--out``; the table goes to ``<out>/fidelity.md`` (for ``docs/fidelity.md``) and every number
to ``<out>/fidelity.json``.

Usage::

    python -m benchmarks.experiments.fidelity --out fidelity_out   # both contrasts, demo size
    python -m benchmarks.experiments.fidelity --out fq --quick     # seconds: tiny everything
    python -m benchmarks.experiments.fidelity --out f --contrasts t2 --n-test-lesion 24 --steps 1200

Long runs belong under the shared CPU lock:
``flock /tmp/disyre-cpu.lock python -m benchmarks.experiments.fidelity --out fidelity_out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.args import at_least
from disyre.config import LEGACY_SWITCHES, RunConfig

log = logging.getLogger("fidelity")

#: The earlier value of each switch (``config.LEGACY_SWITCHES``), as ``section.key -> value``.
LEGACY = {f"{sec}.{k}": v for sec, keys in LEGACY_SWITCHES.items() for k, v in keys.items()}
#: The authors' value of each switch: the config default.
AUTHORS = {key: getattr(getattr(RunConfig(), key.split(".")[0]), key.split(".")[1])
           for key in LEGACY}
#: What each switch is, for the table.
SWITCH_NAMES = {
    "intensity.scaling": "brain-percentile intensity scaling",
    "corruption.bias_selection": "single-level bias selection",
    "corruption.shapes": "legacy shape sizes",
    "corruption.augment_recipe": "legacy augmentation",
}


@dataclass
class Row:
    """One configuration of the ablation."""

    key: str
    label: str
    switches: dict[str, str]


def ablation_rows() -> list[Row]:
    """The rows: earlier project, authors' recipe, and each switch alone set back."""
    rows = [Row("legacy", "project as it was (all four earlier)", dict(LEGACY)),
            Row("authors", "authors' recipe (all four)", dict(AUTHORS))]
    for k, name in SWITCH_NAMES.items():
        rows.append(Row(k.split(".")[1], f"authors' recipe, {name}",
                        {**AUTHORS, k: LEGACY[k]}))
    return rows


@dataclass
class FidelitySettings:
    """What the ablation runs.

    Attributes:
        contrasts: Demo cohorts to run (``t2``, ``t1``).
        quick: Tiny cohort, tiny network, a few steps (a smoke test of the script).
        steps: Training steps per row (default: the demo's).
        n_train, n_val, n_test_healthy, n_test_lesion: Cohort sizes (default: the demo's).
        n_boot: Bootstrap resamples.
        seed: Seed of the cohort, training and bootstrap.
        device: ``auto`` | ``cpu`` | ``cuda``.
        rows: Keys of the rows to run (default: all of :func:`ablation_rows`).
        precision: ``auto`` (the default: from the hardware), ``fp32`` or ``bf16`` for both
            training and detection; other than ``auto``, the rows are kept apart
            (``<row>-<precision>``) so that the two precisions can be compared.
    """

    contrasts: list[str] = field(default_factory=lambda: ["t2", "t1"])
    quick: bool = False
    steps: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test_healthy: int | None = None
    n_test_lesion: int | None = None
    n_boot: int = 1000
    seed: int = 0
    device: str = "auto"
    rows: list[str] | None = None
    precision: str = "auto"


def demo_settings(s: FidelitySettings, contrast: str) -> Any:
    """The demo's settings (``quick`` or full) for one contrast, with the size overrides."""
    from disyre.demo.run import DemoSettings

    base = DemoSettings.quick() if s.quick else DemoSettings()
    sizes = {k: v for k, v in (("n_train", s.n_train), ("n_val", s.n_val),
                               ("n_test_healthy", s.n_test_healthy),
                               ("n_test_lesion", s.n_test_lesion)) if v is not None}
    cohort = replace(base.cohort, contrast=contrast, seed=s.seed, **sizes)
    out = replace(base, cohort=cohort, methods=["dag"], seed=s.seed, device=s.device,
                  n_boot=s.n_boot if not s.quick else min(s.n_boot, 20))
    if s.steps is not None:
        out.steps = int(s.steps)
    return out


def run_config(demo: Any, switches: dict[str, str], precision: str = "auto") -> Any:
    """The demo's run config with the row's switches (and the precision) applied."""
    from disyre.config import apply_overrides

    cfg = demo.run_config()
    extra = [] if precision == "auto" else [f"train.precision={precision}",
                                            f"inference.precision={precision}"]
    return apply_overrides(cfg, [f"{k}={v}" for k, v in switches.items()] + extra)


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The table's numbers from one ``metrics.json`` document."""
    px = metrics.get("pixel") or {}
    ci = metrics.get("bootstrap_ci") or {}
    cal = (metrics.get("calibrated") or {}).get("0.01") or {}
    held = (metrics.get("healthy_heldout") or {}).get("0.01") or {}
    transfer = (metrics.get("healthy_transfer") or {}).get("0.01") or {}
    return {"ap": px.get("ap"), "ap_ci": ci.get("ap"),
            "best_dice": px.get("best_dice_oracle"), "best_dice_ci": ci.get("best_dice_oracle"),
            "dice_1pct": cal.get("dice"), "heldout_fpr_1pct": held.get("fpr"),
            "transfer_fpr_1pct": transfer.get("fpr"),
            "n_lesion_cases": metrics.get("n_cases_with_lesion"),
            "n_heldout_volumes": held.get("n_volumes")}


def run_fidelity(out: str | Path, s: FidelitySettings, *, progress: bool = False,
                 overwrite: bool = False) -> dict[str, Any]:
    """Run the ablation; write ``fidelity.json`` and ``fidelity.md`` under ``out``.

    Returns:
        ``{"settings", "results": {contrast: {row key: headline numbers}}, "timings", ...}``.
    """
    from disyre.benchmark import run_benchmark
    from disyre.config import IntensityConfig
    from disyre.data.cache import prepare_cache
    from disyre.data.manifest import read_manifest
    from disyre.demo.cohort import build_cohort
    from disyre.io_utils import atomic_write_json, atomic_write_text, provenance

    out = Path(out)
    marker = out / "fidelity.json"
    out.mkdir(parents=True, exist_ok=True)
    rows = ablation_rows()
    if s.rows:
        unknown = set(s.rows) - {r.key for r in rows}
        if unknown:
            raise ValueError(f"unknown rows {sorted(unknown)}; choose from "
                             f"{[r.key for r in rows]}")
        rows = [r for r in rows if r.key in s.rows]
    suffix = "" if s.precision == "auto" else f"-{s.precision}"
    # earlier invocations' rows stay in the table (a row is rerun only with ``overwrite``)
    before = json.loads(marker.read_text()) if marker.exists() else {}
    results: dict[str, dict[str, Any]] = before.get("results", {})
    timings: dict[str, dict[str, float]] = before.get("timings_s", {})
    cohorts: dict[str, Any] = before.get("settings", {}).get("cohorts", {})
    for contrast in s.contrasts:
        demo = demo_settings(s, contrast)
        cdir = out / contrast
        cohort = build_cohort(demo.cohort, cdir / "cohort", progress=progress)
        manifest = read_manifest(cohort.manifest)
        cohorts[contrast] = asdict(demo.cohort)
        caches: dict[str, Any] = {}
        results.setdefault(contrast, {})
        for row in rows:
            key = row.key + suffix
            row_file = cdir / key / "headline.json"
            # the training budget and network a row was run with: reused only if they match
            budget = {"steps": demo.steps, "preset": demo.preset, "n_boot": demo.n_boot,
                      "seed": s.seed}
            earlier = json.loads(row_file.read_text()) if row_file.exists() else None
            if earlier is not None and not overwrite:
                if earlier.get("budget", budget) == budget:
                    results[contrast][key] = earlier
                    log.info("%s %s: done earlier (AP %.3f)", contrast, key, earlier["ap"])
                    continue
                log.info("%s %s: run again (done earlier with %s)", contrast, key,
                         earlier.get("budget"))
            scaling = row.switches["intensity.scaling"]
            if scaling not in caches:
                caches[scaling] = prepare_cache(manifest, cdir / f"cache-{scaling}",
                                                IntensityConfig(scaling=scaling),
                                                progress=progress)
            cfg = run_config(demo, row.switches, s.precision)
            t0 = time.perf_counter()
            bench = run_benchmark(["dag"], caches[scaling], cdir / key, cfg=cfg,
                                  steps=demo.steps, seed=s.seed, device=s.device,
                                  n_boot=demo.n_boot, overwrite=True, progress=progress,
                                  title=f"fidelity ablation, {contrast.upper()}: {row.label}")
            run_json = json.loads((cdir / key / "dag" / "run" / "run.json").read_text())
            runtime = run_json.get("runtime") or {}
            label = row.label + ("" if not suffix else f" ({s.precision})")
            results[contrast][key] = {"label": label, "switches": row.switches,
                                      "precision": runtime.get("precision"),
                                      "codebook": run_json.get("codebook"),
                                      "budget": budget, **headline(bench.metrics["dag"])}
            atomic_write_json(row_file, results[contrast][key])
            timings.setdefault(contrast, {})[key] = round(time.perf_counter() - t0, 1)
            log.info("%s %s: AP %.3f", contrast, key, results[contrast][key]["ap"])
    doc = {"settings": {**asdict(s), "steps": demo.steps, "preset": demo.preset,
                        "cohorts": cohorts},
           "rows": [asdict(r) for r in rows], "results": results, "timings_s": timings,
           "provenance": provenance()}
    atomic_write_text(out / "fidelity.md", markdown(doc))
    atomic_write_json(marker, copy.deepcopy(doc))
    return doc


def _num(x: Any, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def _ci(v: Any) -> str:
    return "" if not v or v[0] is None else f" [{v[0]:.3f}, {v[1]:.3f}]"


def markdown(doc: dict[str, Any]) -> str:
    """The ablation table(s) as Markdown, one per contrast."""
    from disyre.corruption import AUTHORS_CODEBOOK

    st = doc["settings"]
    lines = []
    for contrast, res in doc["results"].items():
        c = st["cohorts"][contrast]
        lines += [f"### {contrast.upper()} demo cohort", "",
                  f"{c['n_train']} training, {c['n_val']} validation, {c['n_test_healthy']} "
                  f"held-out healthy and {c['n_test_lesion']} lesioned test subjects; "
                  f"`{st['preset']}` network, {st['steps']} steps; seed {st['seed']}; "
                  f"{st['n_boot'] if not st['quick'] else min(st['n_boot'], 20)} bootstrap "
                  "resamples.", "",
                  "| configuration | pixel AP [95 % CI] | best Dice (oracle) [95 % CI] "
                  "| Dice @ 1 % healthy FPR | held-out healthy FPR @ 1 % |",
                  "|---|---|---|---|---|"]
        for r in res.values():
            lines.append(f"| {r['label']} | {_num(r['ap'])}{_ci(r['ap_ci'])} | "
                         f"{_num(r['best_dice'])}{_ci(r['best_dice_ci'])} | "
                         f"{_num(r['dice_1pct'])} | "
                         + ("n/a" if r["heldout_fpr_1pct"] is None
                            else f"{100 * r['heldout_fpr_1pct']:.2f} %") + " |")
        lines.append("")
        books = {r["switches"]["intensity.scaling"]: r.get("codebook") for r in res.values()}
        for scaling, cb in books.items():
            if cb:
                lines.append(f"Bias codebook fitted with `{scaling}` scaling: "
                             f"{', '.join(f'{c:.3f}' for c in cb)} (the authors': "
                             f"{', '.join(f'{c:.3f}' for c in AUTHORS_CODEBOOK)}).  ")
        lines.append("")
    lines += ["Best Dice is an oracle (its threshold is chosen on the test labels); the 1 % "
              "threshold is set on the healthy validation scans. Intervals: 95 % percentile "
              "bootstrap over test volumes.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--contrasts", default="t2,t1", help="comma-separated: t2, t1")
    p.add_argument("--quick", action="store_true", help="tiny cohort and network, few steps")
    p.add_argument("--steps", type=at_least(1), default=None, help="training steps per row")
    p.add_argument("--n-train", type=at_least(1), default=None)
    p.add_argument("--n-val", type=at_least(1), default=None)
    p.add_argument("--n-test-healthy", type=at_least(0), default=None)
    p.add_argument("--n-test-lesion", type=at_least(1), default=None)
    p.add_argument("--bootstrap", type=at_least(0), default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--rows", default=None,
                   help="comma-separated subset of: " + ",".join(r.key for r in ablation_rows()))
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="training and detection precision (other than auto: rows kept apart)")
    p.add_argument("--overwrite", action="store_true",
                   help="rerun rows done earlier (by default they are reused)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    s = FidelitySettings(
        contrasts=[c.strip() for c in a.contrasts.split(",") if c.strip()], quick=a.quick,
        steps=a.steps, n_train=a.n_train, n_val=a.n_val, n_test_healthy=a.n_test_healthy,
        n_test_lesion=a.n_test_lesion, n_boot=a.bootstrap, seed=a.seed, device=a.device,
        rows=None if a.rows is None else [r.strip() for r in a.rows.split(",")],
        precision=a.precision)
    t0 = time.perf_counter()
    try:
        doc = run_fidelity(a.out, s, progress=not a.no_progress, overwrite=a.overwrite)
    except (FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(markdown(doc))
    print(f"wrote {a.out / 'fidelity.md'} and {a.out / 'fidelity.json'} "
          f"in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
