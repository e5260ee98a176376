"""``disyre demo``: the whole method on a generated cohort, in one folder.

Steps: build the cohort (:mod:`disyre.demo.cohort`, reused when it exists with the same
parameters) -> manifest -> preprocessing cache -> benchmark (:mod:`disyre.benchmark`: DISYRE
``small`` vs the denoising autoencoder and the patched DDPM at the same budget vs the
non-learned reference)
-> one report per method and a comparison table + figures.

Sizing (a 2-core CPU, under 15 minutes in total, training the largest part; 24 training,
8 validation, 5 healthy, 5 older-looking healthy and 21 lesioned test subjects): 2 mm voxels
(99 x 117 x 95, about 80 x 100 pixels per axial slice after cropping), so training patches
are 64 px (``sampler.patch_size=64``) instead of the authors' 128 px at 1 mm, the same field
of view in mm. Detection runs whole slices through the fully convolutional network
(``inference.window=0``): with a 1,200-step model it was both faster and more accurate on the
demo test set than 64 px sliding windows (pixel AP 0.66 vs 0.56 at stride 16 and 0.53 at
stride 32; docs/demo.md); ``--window 64`` restores the authors' sliding windows.

Layout of the output folder::

    cohort/        NIfTI images, lesion masks, manifest.csv, cohort.json (reusable cache)
    cache/         preprocessed volumes (.npy)
    benchmark/     <method>/run, <method>/report, comparison/ (see disyre.benchmark); every
                   report.md has a report.html beside it (the maps in the browser), and
                   comparison/comparison.html shows the methods side by side
    demo.json      settings, table, paths

Example:
    >>> from disyre.demo.run import DemoSettings, run_demo   # doctest: +SKIP
    >>> res = run_demo("demo_out", DemoSettings.quick())       # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from disyre.config import ModelConfig, RunConfig
from disyre.demo.cohort import CohortSpec, build_cohort
from disyre.io_utils import OutputExistsError, atomic_write_json, provenance

log = logging.getLogger(__name__)

DEMO_MARKER = "demo.json"


@dataclass
class DemoSettings:
    """What the demo builds and how long it trains.

    Attributes:
        cohort: The generated cohort.
        preset: Network preset (``small`` by default, ``tiny`` for ``--quick``).
        steps: Training budget of each learned method.
        methods: Methods compared.
        patch: Training patch side (pixels).
        stride: Inference window stride (sliding windows only).
        window: Inference window side (0 = whole slices at once, the default; ``None`` =
            ``patch``).
        n_volumes, n_slices: Training batch = ``n_volumes * n_slices`` patches.
        levels: Ensemble levels of the v2 restoration.
        n_boot: Bootstrap resamples for the confidence intervals.
        device: ``auto`` | ``cpu`` | ``cuda``.
        seed: Seed of training and evaluation.
        train_jobs: Learned methods trained at once (``None``: decided from the device,
            :func:`disyre.runtime.decide_train_jobs`).
    """

    cohort: CohortSpec = field(default_factory=lambda: CohortSpec(
        n_train=24, n_val=8, n_test_healthy=5, n_test_lesion=21, n_transfer=5))
    preset: str = "small"
    steps: int = 1300
    methods: list[str] = field(default_factory=lambda: ["dag", "dae", "reference"])
    patch: int = 64
    stride: int = 32
    window: int | None = 0
    n_volumes: int = 8
    n_slices: int = 4
    levels: list[int] = field(default_factory=lambda: [0, 25, 50, 75])
    n_boot: int = 200
    device: str = "auto"
    seed: int = 0
    train_jobs: int | None = None

    @classmethod
    def quick(cls, **kw: Any) -> DemoSettings:
        """The seconds-long variant: tiny network, few steps, few small-cohort subjects."""
        base: dict[str, Any] = dict(
            cohort=CohortSpec(n_train=2, n_val=1, n_test_healthy=1, n_test_lesion=2,
                              lesion_kinds=["tumour", "stroke"], n_transfer=1),
            preset="tiny", steps=4, patch=32, stride=32, window=0, n_volumes=2, n_slices=2,
            levels=[0, 50], n_boot=20)
        base.update(kw)
        return cls(**base)

    def run_config(self) -> RunConfig:
        """The :class:`RunConfig` shared by the learned methods."""
        cfg = RunConfig()
        cfg.model = ModelConfig.from_preset(self.preset)
        cfg.sampler.patch_size = self.patch
        cfg.sampler.n_volumes = self.n_volumes
        cfg.sampler.n_slices = self.n_slices
        cfg.corruption.window = max(8, self.patch // 2)
        cfg.train.steps = self.steps
        cfg.train.warmup_steps = min(cfg.train.warmup_steps, max(1, self.steps // 10))
        cfg.train.val_every = max(1, self.steps // 5)
        cfg.train.ckpt_every = self.steps
        cfg.train.val_batches = 2
        cfg.train.log_every = max(1, self.steps // 50)
        cfg.train.seed = self.seed
        cfg.train.device = self.device
        cfg.inference.window = self.patch if self.window is None else self.window
        cfg.inference.stride = self.stride
        cfg.inference.levels = list(self.levels)
        cfg.inference.batch_size = 64
        cfg.inference.device = self.device
        return cfg


@dataclass
class DemoResult:
    """Paths and numbers of a demo run."""

    out_dir: Path
    comparison: Path
    reports: dict[str, Path]
    table: str
    rows: list[dict[str, Any]]
    cohort_reused: bool


def run_demo(out_dir: str | Path, settings: DemoSettings | None = None, *,
             cohort_dir: str | Path | None = None, overwrite: bool = False,
             progress: bool = True) -> DemoResult:
    """Build the cohort, train, detect, evaluate and report, all into ``out_dir``.

    Args:
        out_dir: Demo folder (refused if it holds a demo run, unless ``overwrite``; the
            cohort in it is reused when its parameters match).
        settings: What to run (default :class:`DemoSettings`).
        cohort_dir: Where the cohort lives (default ``out_dir/cohort``); share one between
            runs to skip regenerating it.
        overwrite: Replace a previous demo run in ``out_dir``.
        progress: Show progress bars.

    Returns:
        A :class:`DemoResult`.
    """
    from disyre.benchmark import normalise_methods, run_benchmark
    from disyre.data.cache import prepare_cache
    from disyre.data.manifest import read_manifest

    s = settings or DemoSettings()
    normalise_methods(s.methods)
    s.cohort.validate()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder")
    if (out / DEMO_MARKER).exists() and not overwrite:
        raise OutputExistsError(f"{out}: holds a demo run; pass --overwrite to replace it "
                                "(the cohort is reused)")
    if out.is_dir() and not overwrite and any(p.name not in ("cohort",) for p in out.iterdir()):
        raise OutputExistsError(f"{out}: folder already holds files; choose an empty folder "
                                "or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    cohort = build_cohort(s.cohort, cohort_dir or out / "cohort", progress=progress)
    log.info("cohort %s at %s", "reused" if cohort.reused else "built", cohort.root)
    rows = read_manifest(cohort.manifest)
    cfg = s.run_config()
    cache = prepare_cache(rows, out / "cache", cfg.intensity, progress=progress)
    bench = run_benchmark(s.methods, cache, out / "benchmark", cfg=cfg, steps=s.steps,
                          seed=s.seed, device=s.device, n_boot=s.n_boot, overwrite=overwrite,
                          progress=progress, train_jobs=s.train_jobs,
                          title=f"disyre demo ({s.cohort.contrast.upper()}-like cohort, "
                                f"{s.steps} steps)")
    table = bench.table()
    atomic_write_json(out / DEMO_MARKER, {
        "settings": asdict(s), "cohort": str(cohort.root), "cohort_reused": cohort.reused,
        "comparison": str(bench.comparison), "reports": {k: str(v) for k, v in
                                                         bench.reports.items()},
        "html": {"comparison": str(bench.comparison.with_suffix(".html")),
                 **{k: str(v.with_suffix(".html")) for k, v in bench.reports.items()}},
        "summary": bench.rows(), "timings": bench.timings, "training": bench.training,
        "provenance": provenance()})
    return DemoResult(out_dir=out, comparison=bench.comparison, reports=bench.reports,
                      table=table, rows=bench.rows(), cohort_reused=cohort.reused)
