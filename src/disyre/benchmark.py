"""Several methods, one harness: train each with the same budget, detect, evaluate, compare.

Methods:

- ``dag`` (alias ``disyre``): DISYRE v2, the restoration network trained on the disentangled
  anomaly generator;
- ``gaussian``: the same network trained on Gaussian noise (the DDPM-style foil);
- ``fpi``, ``bias``: the ablations (texture only, intensity bias only);
- ``dae``: the denoising autoencoder with coarse noise (Kascenas et al. 2022): the same
  network trained to remove coarse Gaussian noise, restoring the scan once at detection
  (docs/methods.md);
- ``anoddpm``: AnoDDPM (Wyatt et al. 2022): the same network trained to predict simplex
  noise on a 1000-step DDPM schedule; detection noises the scan part-way and walks back;
- ``pddpm``: the patched DDPM (Behrendt et al. 2023): the same network trained to restore
  one noised box of each patch; detection noises each box in turn and stitches;
- ``andi``: ANDi (Frotscher et al.): a DDPM trained on pyramidal noise, scored by the
  geometric mean over steps of the distance between the posterior and the predicted means;
- ``reference``: non-learned, voxel-wise deviation from the healthy training population.

The learned methods are those of the registry (:mod:`disyre.methods`). Every learned method
gets the same :class:`~disyre.config.RunConfig` apart from ``corruption.name`` (same network,
steps, batch, seed) and what its detection needs (:meth:`disyre.methods.Method.run_config`).
Thresholds are calibrated on the
healthy validation scans (split ``val``) of the cache; the test split holds lesioned scans
(evaluated) and, optionally, healthy scans (their false-positive rate at the calibrated
thresholds is reported). An optional ``transfer`` split holds healthy scans unlike the
training ones (the demo's older-looking brains): their false-positive rate at the same
thresholds shows whether the thresholds transfer. How much the thresholds depend on which
validation scans were drawn is measured by refitting them on bootstrap resamples of those
scans. Everything is computed on the cache's preprocessed volumes.

Layout of ``out_dir``::

    <method>/run/          checkpoints and training log (learned methods)
    <method>/reference.npz (the reference method)
    <method>/report/       metrics.json, cases.csv, report.md, report.html, figures/,
                           thresholds.json
    comparison/            comparison.md, comparison.html (methods side by side),
                           comparison.csv, figures/ (with validation_loss.png: each
                           method's validation-loss curve; ap_by_step.png with --eval-steps)
    benchmark.json         settings, timings, report paths, provenance, each learned
                           method's stopping step, reason and validation curve
                           (``stopping``), pixel AP of its kept checkpoints (``budget``)

Example:
    >>> from disyre.benchmark import run_benchmark   # doctest: +SKIP
    >>> res = run_benchmark("dag,gaussian,reference", cache, "bench")  # doctest: +SKIP
    >>> print(res.table())  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from disyre.config import ConfigError, RunConfig
from disyre.io_utils import atomic_write_json, prepare_output_dir, provenance
from disyre.methods import get_method, method_names

log = logging.getLogger(__name__)

#: the non-learned method besides the registry's learned ones
REFERENCE = "reference"
ALIASES = {"disyre": "dag"}
MARKER = "benchmark.json"


def benchmark_methods() -> tuple[str, ...]:
    """Every method a benchmark can run: the registered learned methods and ``reference``.

    Example:
        >>> benchmark_methods()[0], benchmark_methods()[-1]
        ('dag', 'reference')
    """
    return (*method_names(), REFERENCE)


def normalise_methods(methods: Sequence[str] | str) -> list[str]:
    """Parse a method list (``"dag,gaussian"`` or a sequence), resolving aliases.

    Raises:
        ConfigError: An unknown or repeated method, or an empty list.
    """
    if isinstance(methods, str):
        methods = [m for m in methods.split(",")]
    out: list[str] = []
    for m in methods:
        if not m.strip():  # an empty entry ('', 'dag,,gaussian') names no method
            continue
        m = ALIASES.get(m.strip().lower(), m.strip().lower())
        if m not in benchmark_methods():
            raise ConfigError(f"unknown method {m!r}; choose from {list(benchmark_methods())} "
                              f"(or {list(ALIASES)})")
        if m in out:
            raise ConfigError(f"method {m!r} listed twice")
        out.append(m)
    if not out:
        raise ConfigError(f"no methods to benchmark (an empty list); choose from "
                          f"{list(benchmark_methods())} (or {list(ALIASES)})")
    return out


#: values of ``post_processing`` (``--post-processing``)
POST_PROCESSING_CHOICES = ("both", "published", "shared")


def benchmark_protocols(post_processing: str) -> list[str]:
    """The post-processing protocols of a benchmark (``inference.postprocessing`` values).

    Example:
        >>> benchmark_protocols("both"), benchmark_protocols("shared")
        (['published', 'shared'], ['shared'])

    Raises:
        ConfigError: Another value.
    """
    if post_processing not in POST_PROCESSING_CHOICES:
        raise ConfigError(f"post-processing must be one of {', '.join(POST_PROCESSING_CHOICES)}"
                          f", got {post_processing!r}")
    return ["published", "shared"] if post_processing == "both" else [post_processing]


def protocol_rows(name: str, mapper: Any, protocols: Sequence[str]
                  ) -> list[tuple[str, str, str]]:
    """``(row label, protocol, report folder)`` of a method in the comparison.

    One protocol: the method's name and ``report``. Both: ``<name> (published)`` in
    ``report`` and ``<name> (shared)`` in ``report_shared``, unless the two recipes are the
    same (DISYRE, the reference): then one row, the method's name.
    """
    if len(protocols) == 1:
        return [(name, protocols[0], "report")]
    if mapper.recipe("published") == mapper.recipe("shared"):
        return [(name, "published", "report")]
    return [(f"{name} (published)", "published", "report"),
            (f"{name} (shared)", "shared", "report_shared")]


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` produced.

    Attributes:
        out_dir: The benchmark folder.
        metrics: Method -> its ``metrics.json`` document.
        reports: Method -> path of its ``report.md``.
        comparison: Path of ``comparison.md``.
        timings: Method -> ``{"train_s", "detect_s"}``.
        training: How the learned methods were trained
            (:class:`disyre.runtime.TrainJobsDecision` as a dict).
    """

    out_dir: Path
    metrics: dict[str, dict[str, Any]]
    reports: dict[str, Path]
    comparison: Path
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """Headline numbers per method (pixel AP, oracle Dice, Dice and held-out FPR at 1 %,
        the out-of-range healthy FPR at 1 % when there is a transfer split, lesion recall and
        false-positive blobs per healthy scan at 1 %, scan-level AUROC)."""
        out = []
        for name, m in self.metrics.items():
            cal = (m.get("calibrated") or {}).get("0.01") or {}
            held = (m.get("healthy_heldout") or {}).get("0.01") or {}
            tra = (m.get("healthy_transfer") or {}).get("0.01") or {}
            boot = (m.get("threshold_bootstrap") or {}).get("0.01") or {}
            sl = (m.get("slice_level") or {}).get("mean") or {}
            px = m.get("pixel") or {}
            ci = m.get("bootstrap_ci") or {}
            les = ((m.get("lesion_wise") or {}).get("at") or {}).get("0.01") or {}
            scan = (m.get("volume_level") or {}).get("top_1cm3") or {}
            out.append({"method": name, "pixel_ap": px.get("ap"), "auroc": px.get("auroc"),
                        "pixel_ap_ci": ci.get("ap"),
                        "best_dice_oracle": px.get("best_dice_oracle"),
                        "dice_at_1pct": cal.get("dice"),
                        "heldout_fpr_at_1pct": held.get("fpr"),
                        "transfer_fpr_at_1pct": tra.get("fpr"),
                        "heldout_fpr_at_1pct_boot": boot.get("heldout_fpr_ci"),
                        "slice_auroc": sl.get("auroc"),
                        "lesion_recall_at_1pct": les.get("recall"),
                        "lesion_recall_at_1pct_ci": les.get("recall_ci"),
                        "fp_blobs_per_healthy_scan_at_1pct": les.get("fp_per_healthy_scan"),
                        "scan_auroc": scan.get("auroc"), "scan_auroc_ci": scan.get("auroc_ci")})
        return out

    def table(self) -> str:
        """A short plain-text table of :meth:`rows`."""
        head = ["method", "pixel AP", "best Dice*", "Dice@1%", "healthy FPR@1%",
                "older FPR@1%", "slice AUROC", "lesion rec@1%"]
        keys = ["pixel_ap", "best_dice_oracle", "dice_at_1pct", "heldout_fpr_at_1pct",
                "transfer_fpr_at_1pct", "slice_auroc", "lesion_recall_at_1pct"]
        rows = self.rows()
        w = max([10, *(len(r["method"]) for r in rows)])  # "dae (published)" rows too
        lines = ["  ".join(f"{h:>14}" if i else f"{h:<{w}}" for i, h in enumerate(head))]
        for r in rows:
            cells = [f"{r['method']:<{w}}"]
            for k in keys:
                v = r[k]
                if v is None:
                    cells.append(f"{'-':>14}")
                elif k in ("heldout_fpr_at_1pct", "transfer_fpr_at_1pct"):
                    cells.append(f"{100 * v:>13.2f}%")
                else:
                    cells.append(f"{v:>14.3f}")
            lines.append("  ".join(cells))
        lines.append("* oracle: threshold chosen on the test labels; Dice@1% uses a threshold "
                     "set on healthy validation scans; healthy FPR: held-out healthy scans like "
                     "the training ones; older: healthy scans outside the training range")
        return "\n".join(lines)


def _transfer_entries(cache: Any, transfer_split: str | None) -> list:
    if not transfer_split:
        return []
    return [e for e in cache.entries
            if e.split == transfer_split and e.files.get("lesion") is None]


def _split_entries(cache: Any, val_split: str, test_split: str, train_split: str | None
                   ) -> tuple[list, list, list, list]:
    """``(train, val, lesioned test, healthy test)`` entries (``train_split=None``: no
    training scans needed)."""
    train = [e for e in cache.entries if e.split == train_split]
    val = [e for e in cache.entries if e.split == val_split and e.files.get("lesion") is None]
    test = [e for e in cache.entries if e.split == test_split]
    lesioned = [e for e in test if e.files.get("lesion") is not None]
    healthy_test = [e for e in test if e.files.get("lesion") is None]
    if not train and train_split is not None:
        raise ConfigError(f"no scans of split {train_split!r} to train on")
    if not val:
        raise ConfigError(f"no healthy scans of split {val_split!r} to calibrate thresholds on")
    if not lesioned:
        raise ConfigError(f"no scans of split {test_split!r} with a lesion mask to evaluate")
    return train, val, lesioned, healthy_test


def _full(entry: Any, arr: np.ndarray) -> np.ndarray:
    out = np.zeros(tuple(entry.full_shape), np.float32)
    out[entry.slices] = arr
    return out


class _Mapper:
    """Computes a method's map for a cache entry (cropped grid) under one post-processing
    protocol (:attr:`protocol`); the raw maps (before post-processing) are kept in
    ``raw_dir`` when one is given, so that a second protocol does not run the network
    again."""

    def __init__(self, name: str, *, run_dir: Path | None = None, reference: Any = None,
                 device: str = "auto", seed: int = 0, median_filter: int = 0,
                 raw_dir: Path | None = None) -> None:
        self.name = name
        self.reference = reference
        self.median_filter = median_filter  # the reference's post-processing (a run: its own)
        self.detector = None
        self.raw_dir = raw_dir
        self.raw_s = 0.0  # seconds spent making raw maps
        self._raw: dict[str, Path] = {}
        if run_dir is not None:
            from disyre.inference import Detector

            self.detector = Detector.from_checkpoint(run_dir, device=device)
            self.detector.seed = seed
        self.protocol = (self.detector.cfg.inference.postprocessing
                         if self.detector is not None else "shared")

    def set_protocol(self, protocol: str) -> None:
        """Post-process the maps under ``protocol`` from now on (``shared`` | ``published``)."""
        self.protocol = protocol
        if self.detector is not None:
            from disyre.inference.detector import with_inference_overrides

            self.detector.cfg = with_inference_overrides(self.detector.cfg,
                                                         {"postprocessing": protocol})

    def recipe(self, protocol: str | None = None) -> Any:
        """The :class:`~disyre.inference.postprocess.PostProcessing` of the maps under
        ``protocol`` (default: the current one)."""
        from disyre.inference.postprocess import recipe_for

        if self.detector is not None:
            return self.detector.postprocessing(protocol or self.protocol)
        return recipe_for(REFERENCE, protocol or self.protocol, self.median_filter)

    def post_processing(self) -> dict[str, Any]:
        """What the current protocol does to the maps (``metrics.json``'s record)."""
        from disyre.inference.postprocess import describe

        return describe(self.recipe(), self.protocol)

    def work(self, entry: Any) -> int:
        if entry.subject in self._raw:
            return 0
        if self.detector is None:
            return 1
        return self.detector.work(np.asarray(entry.mask()))

    def raw(self, entry: Any, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """The map before post-processing (kept in ``raw_dir``: computed once)."""
        if entry.subject in self._raw:
            return np.load(self._raw[entry.subject])
        t0 = time.perf_counter()
        image = np.array(entry.image(), dtype=np.float32)  # writable copy of the memmap
        mask = np.array(entry.mask(), dtype=bool)
        if self.detector is None:
            amap = self.reference.predict(_full(entry, image), _full(entry, mask) > 0)
            if progress:
                progress(1)
            amap = np.asarray(amap[entry.slices], np.float32) * mask
        else:
            amap = self.detector.map_preprocessed(image, mask, progress, raw=True)
        self.raw_s += time.perf_counter() - t0
        if self.raw_dir is not None:
            self.raw_dir.mkdir(parents=True, exist_ok=True)
            path = self.raw_dir / f"{len(self._raw):05d}.npy"
            np.save(path, amap)
            self._raw[entry.subject] = path
        return amap

    def __call__(self, entry: Any, progress: Callable[[int], None] | None = None) -> np.ndarray:
        mask = np.array(entry.mask(), dtype=bool)
        return self.recipe().apply(self.raw(entry, progress), mask)


def _fpr_at(volumes: list[tuple[np.ndarray, np.ndarray]], thresholds: dict[float, float],
            binary_step: Callable[[np.ndarray], np.ndarray] | None = None
            ) -> dict[str, dict[str, Any]]:
    """Pooled and per-volume voxel FPR of healthy ``(map, brain mask)`` pairs at each
    threshold (``binary_step``: applied to each thresholded volume first)."""
    from disyre.evaluation.thresholds import fpr_key

    sizes = [int(m.sum()) for _, m in volumes]
    n = sum(sizes)
    out: dict[str, dict[str, Any]] = {}
    for f, t in sorted(thresholds.items()):
        fp = []
        for amap, mask in volumes:
            pred = (amap > t) & mask
            if binary_step is not None:
                pred = np.asarray(binary_step(pred), bool) & mask
            fp.append(int(pred.sum()))
        out[fpr_key(f)] = {"threshold": t, "fpr": sum(fp) / n if n else float("nan"),
                           "n_volumes": len(volumes), "n_voxels": n,
                           "per_volume": [round(a / max(k, 1), 6)
                                          for a, k in zip(fp, sizes, strict=True)]}
    return out


def _threshold_bootstrap(val: list[np.ndarray], held: list[np.ndarray],
                         transfer: list[np.ndarray], fprs: list[float], *, n_boot: int,
                         seed: int) -> dict[str, Any]:
    """Spread of the thresholds over bootstrap resamples of the validation scans, and of the
    held-out FPRs they give (95 % percentile intervals)."""
    from disyre.evaluation.thresholds import bootstrap_thresholds, fpr_key

    boot = bootstrap_thresholds(val, fprs, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {"n_boot": n_boot, "n_volumes": len(val)}
    for j, f in enumerate(fprs):
        d: dict[str, Any] = {"threshold_ci": np.percentile(boot[:, j], [2.5, 97.5]).tolist()}
        for name, vols in (("heldout", held), ("transfer", transfer)):
            if vols:
                allv = np.concatenate([np.ravel(v) for v in vols])
                rates = [(allv > t).mean() for t in boot[:, j]]
                d[f"{name}_fpr_ci"] = np.percentile(rates, [2.5, 97.5]).tolist()
        out[fpr_key(f)] = d
    return out


def _evaluate(mapper: _Mapper, val: list, lesioned: list, healthy_test: list, *,
              n_boot: int, seed: int, progress: bool, label: str,
              transfer: list | None = None) -> tuple[Any, dict[str, Any]]:
    """Evaluate one method; returns the harness result and the healthy-scan extras
    (``healthy_transfer``, ``threshold_bootstrap``) for its report."""
    from tqdm.auto import tqdm

    from disyre.evaluation import evaluate_cases

    transfer = transfer or []
    recipe = mapper.recipe()
    step = recipe.apply_binary if recipe.cc_max_voxels else None  # after thresholding
    total = sum(mapper.work(e) for e in (*val, *lesioned, *healthy_test, *transfer))
    bar = tqdm(total=total, desc=f"detect {label}", unit="win", disable=not progress)
    scores: dict[str, list[np.ndarray]] = {"val": []}
    kept: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"test": [], "transfer": []}

    def healthy(entries: list, key: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for e in entries:
            amap, mask = mapper(e, bar.update), np.asarray(e.mask(), bool)
            scores[key].append(np.asarray(amap)[mask])
            yield amap, mask

    def cases(entries: list, key: str | None = None) -> Iterator[tuple]:
        """Test scans as cases (``key``: healthy scans given apart, their scores kept)."""
        for e in entries:
            mask = np.asarray(e.mask(), bool)
            voxel_mm3 = float(abs(np.linalg.det(np.asarray(e.affine, float)[:3, :3])))
            amap = mapper(e, bar.update)
            if key is not None:
                kept[key].append((np.asarray(amap), mask))
            yield (e.subject, amap, None if key else np.asarray(e.lesion(), bool), mask,
                   np.asarray(e.image()), voxel_mm3, tuple(e.spacing))

    try:
        res = evaluate_cases(cases(lesioned), healthy(val, "val"),
                             healthy_test_maps=(cases(healthy_test, "test") if healthy_test
                                                else None),
                             healthy_transfer_maps=cases(transfer, "transfer") if transfer
                             else None,
                             n_boot=n_boot, seed=seed,
                             source=f"{len(val)} healthy validation scans",
                             post_processing=mapper.post_processing(),
                             binary_step=step)
        extra: dict[str, Any] = {}
        if res.thresholds is not None:
            if transfer:
                extra["healthy_transfer"] = _fpr_at(kept["transfer"], res.thresholds.fpr, step)
            if kept["test"]:
                extra["healthy_heldout_volumes"] = {
                    k: v["per_volume"] for k, v in _fpr_at(kept["test"], res.thresholds.fpr,
                                                           step).items()}
            if n_boot > 0:
                # the thresholds' spread; the FPR intervals count voxels before any step
                # after thresholding
                extra["threshold_bootstrap"] = _threshold_bootstrap(
                    scores["val"], [a[m] for a, m in kept["test"]],
                    [a[m] for a, m in kept["transfer"]],
                    sorted(res.thresholds.fpr), n_boot=n_boot, seed=seed)
        return res, extra
    finally:
        bar.close()


# --------------------------------------------------------------------------------------------
# training to the plateau and evaluation of the kept checkpoints (``--patience``,
# ``--eval-steps``)
# --------------------------------------------------------------------------------------------


def parse_eval_steps(steps: Sequence[int] | str | None) -> list[int]:
    """Parse ``--eval-steps`` (``"650,1300,2600"`` or a sequence) into sorted steps.

    Raises:
        ConfigError: A step that is not a whole number >= 1, or one listed twice.

    Example:
        >>> parse_eval_steps("1300, 650")
        [650, 1300]
    """
    if steps is None:
        return []
    items = [v.strip() for v in steps.split(",")] if isinstance(steps, str) else list(steps)
    out: list[int] = []
    for v in items:
        try:
            k = int(v)
        except (TypeError, ValueError):
            raise ConfigError(f"--eval-steps must be steps >= 1 separated by commas, got "
                              f"{v!r}") from None
        if k < 1 or str(k) != str(v).strip():
            raise ConfigError(f"--eval-steps must be steps >= 1 separated by commas, got {v!r}")
        if k in out:
            raise ConfigError(f"--eval-steps lists step {k} twice")
        out.append(k)
    return sorted(out)


def apply_plateau_settings(base: RunConfig, patience: int | None, min_delta: float | None,
                           eval_steps: Sequence[int] | str | None) -> list[int]:
    """Set the stopping rule and the kept checkpoints of every learned method in ``base``.

    ``patience`` and ``min_delta`` become ``train.patience`` / ``train.min_delta`` (the cap
    stays ``train.steps``); the ``eval_steps`` join ``train.keep_steps``, so that their
    checkpoints are kept for :func:`evaluate_kept_steps`.

    Returns:
        The evaluation steps, sorted.

    Raises:
        ConfigError: A negative patience, a ``min_delta`` without ``patience`` or outside
            [0, 1), an evaluation step beyond the cap (each in one line).
    """
    if patience is not None:
        if patience < 0:
            raise ConfigError(f"--patience must be >= 0 (0 = off), got {patience}")
        base.train.patience = int(patience)
    if min_delta is not None:
        if not base.train.patience:
            raise ConfigError("--min-delta needs --patience (the stopping rule it refines)")
        if not 0 <= min_delta < 1:
            raise ConfigError(f"--min-delta must be in [0, 1) (a relative improvement), got "
                              f"{min_delta}")
        base.train.min_delta = float(min_delta)
    steps = parse_eval_steps(eval_steps)
    beyond = [k for k in steps if k > base.train.steps]
    if beyond:
        raise ConfigError(f"--eval-steps {beyond} lie beyond the training cap "
                          f"--steps {base.train.steps}")
    base.train.keep_steps = sorted({*base.train.keep_steps, *steps})
    return steps


def stop_record(run_dir: str | Path) -> dict[str, Any]:
    """How a run's training ended: ``{"step", "reason", "best", "monitor", "curve"}``.

    From the run's ``plateau.json`` (written when ``train.patience`` is set); otherwise the
    newest checkpoint's step, reason ``cap``, and the validation curve of ``train_log.csv``
    (the EMA network's losses where the log has them).
    """
    import csv

    from disyre.training.checkpoint import latest_checkpoint
    from disyre.training.loop import LOG_FILE
    from disyre.training.plateau import STOP_FILE, best_index

    run_dir = Path(run_dir)
    if (run_dir / STOP_FILE).is_file():
        import json

        doc = json.loads((run_dir / STOP_FILE).read_text())
        return {k: doc.get(k) for k in ("step", "reason", "best", "monitor", "curve")}
    curve: list[list[float]] = []
    monitor = "val_loss"
    log_path = run_dir / LOG_FILE
    if log_path.is_file():
        with log_path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if any(r.get("val_loss_ema") for r in rows):
            monitor = "val_loss_ema"
        curve = [[int(r["step"]), float(r[monitor])] for r in rows if r.get(monitor)]
    ckpt = latest_checkpoint(run_dir)
    step = int(ckpt.name.split("_")[-1]) if ckpt is not None else None
    b = best_index([v for _, v in curve])
    return {"step": step, "reason": "cap", "monitor": monitor, "curve": curve,
            "best": None if b < 0 else {"step": curve[b][0], "loss": curve[b][1]}}


def evaluate_kept_steps(name: str, run_dir: Path, steps: Sequence[int], val: list,
                        lesioned: list, *, device: str, seed: int, progress: bool
                        ) -> dict[str, float | None]:
    """Pixel AP of the checkpoints a run kept at ``steps`` (``train.keep_steps``), evaluated
    as the benchmark evaluates its methods (:func:`_evaluate`: thresholds on the healthy
    validation scans, the lesioned test scans), without retraining; ``None`` for a step the
    run did not reach (it stopped at its plateau before)."""
    from disyre.training.checkpoint import step_dir_name

    out: dict[str, float | None] = {}
    for k in steps:
        ckpt = run_dir / "checkpoints" / step_dir_name(k)
        if not ckpt.is_dir():
            out[str(k)] = None
            continue
        mapper = _Mapper(name, run_dir=ckpt, device=device, seed=seed)
        res, _ = _evaluate(mapper, val, lesioned, [], n_boot=0, seed=seed, progress=progress,
                           label=f"{name}@{k}")
        out[str(k)] = float(res.pixel.ap)
    return out


def _line_figure(series: dict[str, list[list[float]]], path: Path, *, xlabel: str,
                 ylabel: str, title: str, log_y: bool = False) -> None:
    from matplotlib.figure import Figure

    from disyre.io_utils import atomic_path

    fig = Figure(figsize=(5.5, 3.5))
    ax = fig.subplots()
    for label, pts in series.items():
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=label)
    if log_y and any(p[1] > 0 for pts in series.values() for p in pts):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def plateau_notes(stopping: dict[str, dict[str, Any]], budget: dict[str, dict[str, Any]],
                  final_ap: dict[str, float], figures: str = "figures") -> list[str]:
    """Markdown lines for ``comparison.md``: where each method stopped (and why) with its
    validation-loss figure and, with ``--eval-steps``, the budget table (pixel AP of the
    checkpoints kept at each step) with its figure (in the folder ``figures``, relative to
    the Markdown file); ``[]`` when nothing was recorded."""
    if not stopping:
        return []
    lines = ["## Training: where each method stopped", "",
             "| method | stopping step | reason | best validation loss (step) |",
             "|---|---|---|---|"]
    for n, r in stopping.items():
        best = r.get("best") or {}
        lines.append(f"| {n} | {r.get('step')} | {r.get('reason')} | "
                     + (f"{best['loss']:.4g} ({best['step']})" if best else "-") + " |")
    lines += ["", "*reason: `plateau` = the validation loss on healthy patches stopped "
              "improving for the patience set; `cap` = the step cap (`--steps`) reached"
              + ("; `interrupted` = stopped before its benchmark finished (the newest "
                 "checkpoint's step)" if any(r.get("reason") == "interrupted"
                                             for r in stopping.values()) else "")
              + ".*", "",
              f"![validation loss]({figures}/validation_loss.png)", ""]
    if budget:
        steps = sorted({int(k) for b in budget.values() for k in b})
        lines += ["## Pixel AP by training budget", "",
                  "| method | " + " | ".join(f"step {k}" for k in steps) + " | final |",
                  "|---|" + "---|" * (len(steps) + 1)]
        for n, b in budget.items():
            cells = ["-" if b.get(str(k)) is None else f"{b[str(k)]:.3f}" for k in steps]
            fin = final_ap.get(n)
            lines.append(f"| {n} | " + " | ".join(cells) + " | "
                         + ("-" if fin is None else f"{fin:.3f} (step "
                            f"{stopping.get(n, {}).get('step')})") + " |")
        lines += ["", "*the checkpoints kept at each step (`train.keep_steps`), evaluated "
                  "without retraining; - : the run stopped before that step.*", "",
                  f"![pixel AP by budget]({figures}/ap_by_step.png)", ""]
    return lines


def write_plateau_figures(fig_dir: Path, stopping: dict[str, dict[str, Any]],
                          budget: dict[str, dict[str, Any]], final_ap: dict[str, float]
                          ) -> list[Path]:
    """``validation_loss.png`` (each method's validation-loss curve) and, with a budget,
    ``ap_by_step.png`` (pixel AP against the training step, the final model last)."""
    written = []
    if stopping:
        p = fig_dir / "validation_loss.png"
        _line_figure({n: r.get("curve") or [] for n, r in stopping.items()}, p,
                     xlabel="training step", ylabel="validation loss",
                     title="Validation loss (healthy patches)", log_y=True)
        written.append(p)
    if budget:
        series = {}
        for n, b in budget.items():
            pts = [[int(k), v] for k, v in b.items() if v is not None]
            stop = stopping.get(n, {}).get("step")
            if n in final_ap and stop is not None and all(k != stop for k, _ in pts):
                pts.append([int(stop), final_ap[n]])
            series[n] = sorted(pts)
        p = fig_dir / "ap_by_step.png"
        _line_figure(series, p, xlabel="training step", ylabel="pixel AP",
                     title="Pixel AP by training budget")
        written.append(p)
    return written


def evaluate_run(run_dir: str | Path, cache: Any, *,
                 inference: dict[str, Any] | None = None, val_split: str = "val",
                 test_split: str = "test", transfer_split: str | None = "transfer",
                 device: str = "auto", n_boot: int = 1000, seed: int = 0,
                 progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """Evaluate a trained run (or the reference) on a cache as :func:`run_benchmark` does.

    Re-evaluates one method of a benchmark (``<bench>/dag/run``) with other inference
    settings, e.g. ``inference={"median_filter": 3}``, or on another cache (a larger test
    split), with the benchmark's scans, thresholds fit and intervals: thresholds on the
    ``val_split`` healthy scans, lesioned and healthy ``test_split`` scans, the
    ``transfer_split`` healthy scans. ``run_dir`` may also be the non-learned reference's
    ``<bench>/reference/reference.npz`` (its only setting: ``inference["median_filter"]``).

    Returns:
        ``(EvaluationResult, extras)`` as the benchmark's report gets them.

    Example:
        >>> res, _ = evaluate_run("demo_out/benchmark/dag/run", VolumeCache.open("demo_out/cache"),
        ...                       inference={"median_filter": 3})  # doctest: +SKIP
    """
    out = evaluate_run_protocols(run_dir, cache, [None], inference=inference,
                                 val_split=val_split, test_split=test_split,
                                 transfer_split=transfer_split, device=device, n_boot=n_boot,
                                 seed=seed, progress=progress)
    return out[None]


def evaluate_run_protocols(run_dir: str | Path, cache: Any, protocols: Sequence[str | None],
                           *, inference: dict[str, Any] | None = None, val_split: str = "val",
                           test_split: str = "test", transfer_split: str | None = "transfer",
                           device: str = "auto", n_boot: int = 1000, seed: int = 0,
                           progress: bool = True) -> dict[str | None, tuple[Any, dict[str, Any]]]:
    """:func:`evaluate_run` under several post-processing ``protocols`` (``shared`` |
    ``published``; ``None`` = the run's own setting), the network run once per scan.

    Returns:
        ``{protocol: (EvaluationResult, extras)}``.
    """
    import tempfile

    from disyre.inference.detector import with_inference_overrides

    _train, val_e, lesioned, healthy_test = _split_entries(cache, val_split, test_split, None)
    run_dir = Path(run_dir)
    out: dict[str | None, tuple[Any, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="disyre-raw-") as tmp:
        raw_dir = Path(tmp) if len(protocols) > 1 else None
        if run_dir.suffix == ".npz":
            from disyre.evaluation.baselines import ReferenceModel

            mapper = _Mapper("reference", reference=ReferenceModel.load(run_dir),
                             median_filter=int((inference or {}).get("median_filter", 0)),
                             raw_dir=raw_dir)
        else:
            mapper = _Mapper("run", run_dir=run_dir, device=device, seed=seed,
                             raw_dir=raw_dir)
            assert mapper.detector is not None
            mapper.detector.cfg = with_inference_overrides(mapper.detector.cfg,
                                                           inference or {})
            mapper.protocol = mapper.detector.cfg.inference.postprocessing
        own = mapper.protocol
        transfer = _transfer_entries(cache, transfer_split)
        for protocol in protocols:
            mapper.set_protocol(own if protocol is None else protocol)
            out[protocol] = _evaluate(mapper, val_e, lesioned, healthy_test, n_boot=n_boot,
                                      seed=seed, progress=progress,
                                      label=run_dir.parent.name or "run", transfer=transfer)
    return out


def run_benchmark(methods: Sequence[str] | str, cache: Any, out_dir: str | Path, *,
                  cfg: RunConfig | None = None, steps: int | None = None, seed: int = 0,
                  train_split: str = "train", val_split: str = "val", test_split: str = "test",
                  transfer_split: str | None = "transfer", device: str = "auto",
                  n_boot: int = 1000, overwrite: bool = False,
                  progress: bool = True, title: str = "Benchmark",
                  source: str | Path | None = None,
                  train_jobs: int | None = None, patience: int | None = None,
                  min_delta: float | None = None,
                  eval_steps: Sequence[int] | str | None = None,
                  post_processing: str = "both", resume: bool = False) -> BenchmarkResult:
    """Train, detect and evaluate several methods the same way; write reports + a comparison.

    Args:
        methods: Subset of :func:`benchmark_methods` (``"dag,gaussian,reference"`` or a
            list).
        cache: A :class:`~disyre.data.cache.VolumeCache` holding the train/val/test splits.
        out_dir: Benchmark folder (refused if it holds a benchmark, unless ``overwrite``).
        cfg: Base run config shared by the learned methods (default: ``RunConfig()``).
        steps: Training budget (optimizer steps) of each learned method; default
            ``cfg.train.steps``.
        seed: Seed of training, noising and bootstrap.
        train_split, val_split, test_split: Split names in the cache.
        transfer_split: Split of healthy scans unlike the training ones, whose
            false-positive rate at the calibrated thresholds is reported (skipped when the
            cache has none; ``None``: never).
        device: ``auto`` | ``cpu`` | ``cuda``.
        n_boot: Bootstrap resamples for the confidence intervals.
        overwrite: Replace an existing benchmark in ``out_dir``.
        progress: Show progress bars.
        source: What the cache was made from (e.g. the manifest), named in errors (default
            the cache folder).
        title: Heading of the comparison.
        train_jobs: Learned methods trained at once (``None``: decided from the device, the
            CPU's flags and the cores, :func:`disyre.runtime.decide_train_jobs`; side by side
            on a multi-core CPU with AMX). The choice is logged and recorded in
            ``benchmark.json`` and ``comparison.md``.
        patience: Stop each learned method at the plateau of its validation loss
            (``train.patience``; ``steps`` is the cap). Each method's stopping step, reason
            and validation-loss curve go into ``benchmark.json`` and the comparison.
        min_delta: ``train.min_delta`` of the plateau rule (needs ``patience``).
        eval_steps: Steps whose checkpoints are kept (``train.keep_steps``) and evaluated as
            well (pixel AP by budget, :func:`evaluate_kept_steps`), e.g. ``"650,1300,2600"``.
        resume: Continue an interrupted benchmark in ``out_dir``: a learned method whose run
            finished is not trained again, one that was interrupted continues from its newest
            checkpoint (:func:`disyre.training.train`'s ``resume``), the others start; every
            evaluation is made again (its outputs replaced). A continued run's train seconds
            count this call's training only, a finished one's its recorded training (``None``
            where its record has none); ``benchmark.json``'s ``resumed`` lists the runs that
            existed before.
        post_processing: ``shared`` (every method's maps post-processed alike),
            ``published`` (each method's own published recipe) or ``both`` (side by side:
            rows ``<method> (published)`` and ``<method> (shared)``, reports in
            ``<method>/report/`` and ``<method>/report_shared/``; a method whose recipe is
            the same under both gets one row). Each method's maps are computed once and
            post-processed each way; thresholds are calibrated per protocol
            (:func:`protocol_rows`).

    Returns:
        A :class:`BenchmarkResult`.
    """
    from disyre.evaluation.html import write_comparison_html
    from disyre.evaluation.report import write_comparison, write_report
    from disyre.evaluation.thresholds import save_thresholds
    from disyre.inference.thresholds import bind_thresholds

    names = normalise_methods(methods)
    protocols = benchmark_protocols(post_processing)
    base = copy.deepcopy(cfg) if cfg is not None else RunConfig()
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        base.train.steps = int(steps)
    base.train.seed = int(seed)
    base.train.device = device
    base.inference.device = device
    kept_steps = apply_plateau_settings(base, patience, min_delta, eval_steps)
    train_e, val_e, lesioned, healthy_test = _split_entries(cache, val_split, test_split,
                                                            train_split)
    transfer_e = _transfer_entries(cache, transfer_split)
    train_vols = [e.image() for e in train_e]
    train_masks = [e.mask() for e in train_e]
    # every learned method's checks (and the one codebook of dag/bias) before anything trains
    from disyre.training.prepare import prepare_run

    src = source if source is not None else getattr(cache, "directory", "cache")
    codebook = None
    codebooks: dict[str, list[float] | None] = {}
    for name in names:
        if name == "reference":
            continue
        rc = get_method(name).run_config(base)
        wants = get_method(name).codebook and rc.corruption.codebook is None
        cb = prepare_run(rc, train_vols, source=src, train_masks=train_masks,
                         codebook=codebook, fit=wants)
        if wants:
            codebook = cb
        codebooks[name] = cb if wants else None
    out = prepare_output_dir(out_dir, overwrite=overwrite or resume, marker=MARKER)
    rewrite = overwrite or resume  # evaluation outputs are made again on resume
    finished: dict[str, Any] = {}  # learned method -> its finished run's record (kept)
    resumed: list[str] = []  # learned methods whose run existed before this call
    if resume:
        from disyre.training.loop import run_status

        for n in names:
            doc = run_status(out / n / "run") if n != "reference" else None
            if doc is not None:
                resumed.append(n)
                if doc.get("status") == "done":
                    finished[n] = doc
        if finished:
            log.info("resume: %s finished training before; not trained again",
                     ", ".join(finished))
    metrics: dict[str, dict[str, Any]] = {}
    evaluated: dict[str, Any] = {}  # method -> EvaluationResult (comparison.html)
    reports: dict[str, Path] = {}
    timings: dict[str, dict[str, float]] = {}
    stopping: dict[str, dict[str, Any]] = {}  # learned method -> stop_record
    budget: dict[str, dict[str, float | None]] = {}  # learned method -> step -> pixel AP
    first_label: dict[str, str] = {}  # learned method -> the label of its first protocol row
    from disyre.runtime import decide_train_jobs
    from disyre.training.parallel import TrainJob, train_many

    learned = [n for n in names if n != "reference"]
    to_train = [n for n in learned if n not in finished]
    jobs_plan = decide_train_jobs(len(to_train), device, train_jobs)
    if to_train:
        log.info("training %s: %s", ", ".join(to_train), jobs_plan.reason)
    # a finished run's own training time, where its record has it (None: not known)
    trained_s: dict[str, float | None] = {n: d.get("wall_s") for n, d in finished.items()}
    same: list[str] = []  # methods whose two protocols post-process alike
    if jobs_plan.workers > 1:
        # the learned methods side by side first; each is then evaluated in turn
        done = train_many([
            TrainJob(get_method(n).run_config(base), train_vols, [e.image() for e in val_e],
                     out / n / "run", codebook=codebooks[n], overwrite=overwrite,
                     resume=resume, data_info=cache.describe(train_split),
                     train_masks=train_masks, val_masks=[e.mask() for e in val_e])
            for n in to_train],
            workers=jobs_plan.workers, threads_each=jobs_plan.threads_each,
            progress=progress)
        trained_s.update({n: d.wall_s for n, d in zip(to_train, done, strict=True)})
    for name in names:
        t0 = time.perf_counter()
        mdir = out / name
        raw_dir = mdir / "raw_maps" if len(protocols) > 1 else None
        if name == "reference":
            from disyre.evaluation.baselines import fit_reference

            ref = fit_reference(_full(e, np.asarray(e.image())) for e in train_e)
            ref.save(mdir / "reference.npz")
            # the learned methods' post-processing, so that every map is filtered alike
            mapper = _Mapper(name, reference=ref, median_filter=base.inference.median_filter,
                             raw_dir=raw_dir)
            run_cfg: dict[str, Any] = {"method": "reference", "n_train": len(train_e),
                                       "inference": {"median_filter":
                                                     base.inference.median_filter}}
        else:
            from disyre.training import train

            rc = get_method(name).run_config(base)
            if name not in trained_s:
                train(rc, train_vols, [e.image() for e in val_e], mdir / "run",
                      overwrite=overwrite, resume=resume, codebook=codebooks[name],
                      progress=progress,
                      data_info=cache.describe(train_split),
                      train_masks=train_masks, val_masks=[e.mask() for e in val_e])
            mapper = _Mapper(name, run_dir=mdir / "run", device=device, seed=seed,
                             raw_dir=raw_dir)
            run_cfg = {"method": name, "run": rc.to_dict()}
        t1 = time.perf_counter()
        train_s = trained_s.get(name, t1 - t0)
        eval_s: dict[str, float] = {}
        try:
            for label, protocol, folder in protocol_rows(name, mapper, protocols):
                mapper.set_protocol(protocol)
                ta, raw0 = time.perf_counter(), mapper.raw_s
                res, extra = _evaluate(mapper, val_e, lesioned, healthy_test, n_boot=n_boot,
                                       seed=seed, progress=progress, label=label,
                                       transfer=transfer_e)
                eval_s[label] = time.perf_counter() - ta - (mapper.raw_s - raw0)
                config = {**run_cfg, "cache": str(cache.directory), "n_val": len(val_e),
                          "n_test_lesion": len(lesioned), "n_test_healthy": len(healthy_test),
                          "post_processing_protocol": protocol}
                if mapper.detector is not None:
                    config["precision"] = mapper.detector.precision.to_dict()
                if transfer_e:
                    config["n_test_transfer"] = len(transfer_e)
                reports[label] = write_report(mdir / folder, res, config=config,
                                              overwrite=rewrite, title=f"{title}: {label}",
                                              extra=extra)
                if res.thresholds is not None:
                    if mapper.detector is not None:  # record the maps they fit, for detect
                        bind_thresholds(res.thresholds, mapper.detector, mdir / "run")
                    save_thresholds(mdir / folder / "thresholds.json", res.thresholds)
                metrics[label] = {**res.to_dict(), **extra}
                evaluated[label] = res
        finally:
            if raw_dir is not None and raw_dir.exists():
                import shutil

                shutil.rmtree(raw_dir)
        for label, e_s in eval_s.items():
            timings[label] = {"train_s": None if train_s is None else round(train_s, 2),
                              "detect_s": round(mapper.raw_s + e_s, 2)}
            log.info("%s: pixel AP %.4f (train %s s, detect+evaluate %.0f s)", label,
                     metrics[label]["pixel"]["ap"],
                     "?" if train_s is None else f"{train_s:.0f}", mapper.raw_s + e_s)
        if len(eval_s) < len(protocols):
            same.append(name)
        if mapper.detector is not None:
            first_label[name] = next(iter(eval_s))
            stopping[name] = stop_record(mdir / "run")
            if kept_steps:
                budget[name] = evaluate_kept_steps(name, mdir / "run", kept_steps, val_e,
                                                   lesioned, device=device, seed=seed,
                                                   progress=progress)
    notes = []
    if len(protocols) > 1:
        notes.append("*Post-processing: `(published)` rows: each method's maps post-processed "
                     "as its publication did (erosion, median filter, small components "
                     "removed after thresholding); `(shared)` rows: every method the same (a "
                     f"{base.inference.median_filter}-voxel 3D median filter). The maps are "
                     "computed once; thresholds are calibrated per protocol on the healthy "
                     "validation maps of that protocol."
                     + (f" {', '.join(same)}: the same post-processing under both protocols "
                        "(one row)." if same else "") + "*")
    if len(learned) > 1:
        notes.append(f"*Training: {', '.join(learned)} "
                     + ("side by side" if jobs_plan.workers > 1 else "one after the other")
                     + f" ({jobs_plan.reason}); train seconds are each method's own wall "
                     "time.*")
    final_ap = {n: metrics[first_label[n]]["pixel"]["ap"] for n in stopping}
    more = plateau_notes(stopping, budget, final_ap)
    notes += ([""] if notes and more else []) + more  # a blank line before its heading
    comparison = write_comparison(out / "comparison", metrics, title=title, overwrite=rewrite,
                                  notes=notes)
    write_plateau_figures(comparison.parent / "figures", stopping, budget, final_ap)
    write_comparison_html(comparison.parent, evaluated, comparison.read_text(), title=title)
    result = BenchmarkResult(out_dir=out, metrics=metrics, reports=reports,
                             comparison=comparison, timings=timings,
                             training=jobs_plan.to_dict())
    atomic_write_json(out / MARKER, {
        "methods": names, "steps": base.train.steps, "seed": seed, "device": device,
        "post_processing": protocols,
        "splits": {"train": len(train_e), "val": len(val_e), "test_lesion": len(lesioned),
                   "test_healthy": len(healthy_test),
                   **({"test_transfer": len(transfer_e)} if transfer_e else {})},
        "run": base.to_dict(), "timings": timings, "training": jobs_plan.to_dict(),
        "summary": result.rows(),
        "stopping": stopping, "patience": base.train.patience,
        "min_delta": base.train.min_delta, "eval_steps": kept_steps, "budget": budget,
        "resumed": resumed,
        "reports": {k: str(v.relative_to(out)) for k, v in reports.items()},
        "comparison": str(comparison.relative_to(out)), "provenance": provenance()})
    return result
