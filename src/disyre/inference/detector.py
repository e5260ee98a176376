"""The user's API: :class:`Detector` maps a NIfTI scan to an anomaly map on the scan's own grid.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from disyre.config import ConfigError, InferenceConfig, RunConfig
from disyre.data.intensity import intensity_signature
from disyre.data.nifti import voxel_size_text
from disyre.inference.postprocess import IDENTITY, PostProcessing, recipe_for
from disyre.inference.resampling import (
    image_and_brain_to_shape,
    needs_resampling,
    resampled_shape,
    zoom_to_shape,
)
from disyre.inference.restoration import InferenceInput
from disyre.inference.result import DetectionResult
from disyre.inference.scoring import volume_score
from disyre.inference.windows import _size_multiple, count_work, predict_volume
from disyre.runtime import (
    PrecisionDecision,
    decide_precision,
    resolve_device,
    retain_freed_memory,
    uncached_cpu_kernels,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# 3. The user's API
# --------------------------------------------------------------------------------------------


class DetectionError(ValueError):
    """A scan could not be mapped (the message starts with the scan's path)."""


#: Largest tolerated difference between a scan's and the training data's intensity deciles.
SIGNATURE_TOLERANCE: float = 0.15


def sanity_warnings(scan: Any, image: np.ndarray, mask: np.ndarray,
                    reference: dict[str, Any]) -> list[str]:
    """Warnings that a scan looks unlike the model's training data (header and intensities).

    Checks: (1) voxel size very anisotropic (slices > 3x thicker than in-plane) or an
    oblique affine (> 20 degrees from the nearest axis-aligned orientation): the axial
    slices are then not what the model saw; (2) when ``reference`` holds
    ``intensity_quantiles`` (training data), a decile of the scan's normalised brain
    intensities differs by more than :data:`SIGNATURE_TOLERANCE` — typically another
    contrast (T1 vs T2) or a badly skull-stripped scan; (3) ``reference["spacing"]``
    differing by a factor of more than 1.5 (a 1 mm scan for a 2 mm model).

    Args:
        scan: The loaded scan (``affine``, ``spacing``, ``path``).
        image: Its normalised cropped volume.
        mask: Its brain mask.
        reference: Training-data description from the checkpoint (may be empty).

    Returns:
        Messages, each starting with the scan's path.
    """
    out: list[str] = []
    name = str(getattr(scan, "path", "scan"))
    aff = np.asarray(scan.affine, float)[:3, :3]
    norms = np.sqrt((aff ** 2).sum(0))
    if norms.min() > 0 and norms.max() / norms.min() > 3:
        out.append(f"{name}: voxel size {voxel_size_text(scan.affine)} is very anisotropic; "
                   "the model was trained on near-isotropic axial slices")
    if norms.min() > 0:
        cosines = np.abs(aff / norms).max(0)
        angle = float(np.degrees(np.arccos(np.clip(cosines.min(), -1, 1))))
        if angle > 20:
            out.append(f"{name}: oblique orientation ({angle:.0f} degrees from the nearest "
                       "axis); axial slices are only approximately axial")
    ref_spacing = reference.get("spacing")
    if ref_spacing is not None:
        sp = np.asarray(getattr(scan, "spacing", norms), float)
        rs = np.asarray(ref_spacing, float)
        if np.any(np.maximum(sp / rs, rs / sp) > 1.5):
            out.append(f"{name}: voxel size {voxel_size_text(scan.affine, sp)} differs from "
                       f"the training data's {voxel_size_text(scan.affine, rs)}")
    ref_q = reference.get("intensity_quantiles")
    if ref_q is not None:
        q = np.asarray(intensity_signature(image, mask))
        diff = float(np.abs(q - np.asarray(ref_q, float)).max())
        if diff > SIGNATURE_TOLERANCE:
            contrast = reference.get("contrast") or "the training data"
            out.append(f"{name}: brain intensity distribution differs from {contrast} "
                       f"(decile difference {diff:.2f} > {SIGNATURE_TOLERANCE}); is it the "
                       "same contrast and skull-stripped? the map may be unreliable")
    return out


class Detector:
    """A trained model ready to map scans: ``Detector.from_checkpoint(path).predict(scan)``.

    Args:
        model: Network with ``forward(x, level)``.
        cfg: Run config of the model (its ``inference`` section is used, its ``intensity``
            section normalises scans, its ``corruption`` gives the network inputs).
        device: Where to compute (``"auto"``: CUDA if available).
        reference: Training-data description for the sanity checks (``contrast``,
            ``intensity_quantiles``, ``spacing``); see :func:`sanity_warnings`.
        channels_last: Feed the network channels-last tensors (default:
            :func:`disyre.model.use_channels_last` in ``inference`` mode).
        seed: Seed of the generator for noising corruptions (the Gaussian and diffusion
            baselines).
        resample: Map a scan whose voxel size differs from the training data's
            (``reference["spacing"]``) at the training spacing and interpolate the map back
            onto the scan's grid (:mod:`disyre.inference.resampling`); ``False`` maps it as
            it is, with a warning (``disyre detect --no-resample``).

    Example:
        >>> # det = Detector.from_checkpoint("runs/t2", device="auto", levels=[0, 25, 50, 75])
        >>> # res = det.predict("sub-01_T2w.nii.gz")
        >>> # res.save_map("maps/sub-01_T2w.nii.gz"); print(res.score)
    """

    def __init__(self, model: nn.Module, cfg: RunConfig, device: str | torch.device = "auto",
                 reference: dict[str, Any] | None = None, channels_last: bool | None = None,
                 seed: int = 0, resample: bool = True) -> None:
        self.device = resolve_device(device)
        self.cfg = cfg
        if self.device.type == "cpu":
            retain_freed_memory()  # activations are reused, not faulted in again per pass
        if channels_last is None:
            from disyre.model import use_channels_last

            channels_last = use_channels_last(cfg.model, self.device,
                                              cfg.inference.channels_last,
                                              precision=self.precision.precision,
                                              mode="inference")
        self.channels_last = channels_last
        model = model.to(self.device).eval()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        if self.device.type == "cpu":
            uncached_cpu_kernels(self._first_pass)  # a folder's peak stays that of one scan
        self.reference = dict(reference or {})
        self.seed = seed
        self.resample = resample
        self._spacing_unknown_said = True  # from_checkpoint: False where none is recorded
        self.corruption = _inference_corruption(cfg)

    def _first_pass(self) -> None:
        """One small network pass (two blank images of twice the network's size multiple)."""
        from disyre.methods.base import forward

        side = 2 * _size_multiple(self.model)
        x = torch.zeros((2, 1, side, side), device=self.device)
        with torch.inference_mode():
            forward(self.model, x, torch.zeros(2, dtype=torch.long, device=self.device),
                    self.precision.precision, self.channels_last)

    @property
    def inference(self) -> InferenceConfig:
        """The inference settings in use: the config's ``inference`` section with the
        settings it leaves to the method (``null``) resolved
        (:meth:`disyre.methods.Method.resolved_inference`)."""
        from disyre.methods import get_method

        return get_method(self.cfg.corruption.name).resolved_inference(self.cfg.inference)

    def postprocessing(self, protocol: str | None = None) -> PostProcessing:
        """The post-processing of this model's maps under ``protocol`` (default
        ``inference.postprocessing``): :func:`~disyre.inference.postprocess.recipe_for`."""
        f = self.cfg.inference
        return recipe_for(self.cfg.corruption.name, protocol or f.postprocessing,
                          f.median_filter)

    def post_process(self, raw: np.ndarray, mask: np.ndarray, protocol: str | None = None
                     ) -> np.ndarray:
        """A raw map (:meth:`map_preprocessed` with ``raw=True``) post-processed under
        ``protocol`` (default ``inference.postprocessing``): equal to the map
        :meth:`map_preprocessed` makes with that protocol, without running the network
        again."""
        return self.postprocessing(protocol).apply(raw, np.asarray(mask, bool))

    @property
    def precision(self) -> PrecisionDecision:
        """The precision the network runs in (``inference.precision`` resolved), and why."""
        return decide_precision(self.inference.precision, self.device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto",
                        runtime: str = "auto", *, check_weights: bool = True,
                        **overrides: Any) -> Detector:
        """Load a trained model (a run folder, a checkpoint folder or an export folder).

        Args:
            path: Run folder (its newest checkpoint), checkpoint folder, or export folder of
                ``disyre export`` (:func:`disyre.inference.exported.load_export`).
            device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
            runtime: For an export folder: ``auto``, ``onnxruntime`` or ``torchscript``.
            check_weights: Refuse weights whose SHA-256 or method differs from what the
                checkpoint recorded (``False``: load them with a warning).
            **overrides: Fields of :class:`~disyre.config.InferenceConfig` to change
                (``levels=[0, 25, 50, 75]``, ``method="multistep"``, ``window=0``, ...).

        Returns:
            The detector.

        Raises:
            FileNotFoundError: Nothing at ``path``.
            ValueError: ``path`` is not a disyre checkpoint, or an override is unknown.
            WeightsMismatchError: The weights are not the ones the checkpoint recorded.
        """
        from disyre.training.checkpoint import is_export_folder

        exported = is_export_folder(path)
        if exported:  # the exported graph runs: no network of ours is built
            from disyre.inference.exported import load_export

            model, cfg, meta = load_export(path, runtime, device)
        else:
            model, cfg, meta = load_checkpoint(path, device, check_weights=check_weights)
        cfg = with_inference_overrides(cfg, overrides)
        reference = dict(meta.get("data") or {})
        if "contrast" not in reference:
            reference["contrast"] = meta.get("contrast")
        det = cls(model, cfg, device=device, reference=reference,
                  channels_last=False if exported else None)
        det._spacing_unknown_said = reference.get("spacing") is not None
        return det

    def predict(self, scan: Any, mask: Any = None,
                progress: Callable[[int], None] | None = None,
                on_total: Callable[[int], None] | None = None) -> DetectionResult:
        """Anomaly map of one preprocessed scan, on the scan's own grid.

        A raw head (skull, native space) goes through its checkpoint's preprocessing recipe
        first: :func:`disyre.preprocessing.predict_raw` ``(detector, scan)``.

        Args:
            scan: A :class:`~disyre.data.nifti.Scan` or a NIfTI path.
            mask: Optional brain mask: a NIfTI path on the scan's grid, or a bool ``(D, H, W)``
                axial-first array; default = non-zero voxels.
            progress: Called with the number of windows done after each network pass.
            on_total: Called once, before the network runs, with the number of windows (or
                slices, for ``window=0``) this scan needs (to size a progress bar).

        Returns:
            The :class:`DetectionResult`.

        Raises:
            disyre.data.nifti.InputError: The file is unreadable or invalid.
            DetectionError: The map holds NaN or Inf (the network's output was not finite).
        """
        from disyre.data.intensity import normalize
        from disyre.data.nifti import InputError, Scan, load_mask, load_scan

        if not isinstance(scan, Scan):
            scan = load_scan(scan, nan_policy=self.cfg.intensity.nan_policy)
        if isinstance(mask, str | Path):
            mask = load_mask(mask, like=scan)
        try:
            pre = normalize(scan.data, mask, self.cfg.intensity, spacing=scan.spacing)
        except ValueError as e:
            raise InputError(f"{scan.path}: {e}") from e
        target = self.reference.get("spacing")
        if target is None and not self._spacing_unknown_said:  # said once per detector
            self._spacing_unknown_said = True  # once per detector, not once per scan
            warnings.warn(f"{scan.path}: the checkpoint records no voxel size of its training "
                          "data (an earlier release): scans are mapped at their own voxel "
                          "size, unchecked", stacklevel=2)
        if self.resample and needs_resampling(scan.spacing, target):
            amap, rest, score, msgs = self._map_resampled(scan, mask, pre, target, progress,
                                                          on_total)
        else:
            amap, rest, score, msgs = self._map_checked(scan, pre, self.reference,
                                                        scan.spacing, progress, on_total,
                                                        stacklevel=3)
        res = DetectionResult(
            anomaly_map=np.empty(0, np.float32), restored=np.empty(0, np.float32),
            score=score, map_cropped=amap, restored_cropped=rest,
            image_cropped=pre.image, mask_cropped=pre.mask, scan=scan, pre=pre, warnings=msgs,
            postprocessing=self.postprocessing())
        from disyre.data.nifti import to_native

        res.anomaly_map = to_native(res.full(amap), scan).astype(np.float32)
        res.restored = to_native(res.full(rest), scan).astype(np.float32)
        return res

    def _map_checked(self, scan: Any, pre: Any, reference: dict[str, Any],
                     spacing: Sequence[float], progress: Callable[[int], None] | None,
                     on_total: Callable[[int], None] | None, stacklevel: int = 4
                     ) -> tuple[np.ndarray, np.ndarray, float, list[str]]:
        """The sanity warnings of ``pre`` (a preprocessed ``scan`` at voxel size ``spacing``),
        its map and restoration (cropped), checked finite, and its volume score."""
        msgs = sanity_warnings(scan, pre.image, pre.mask, reference)
        for m in msgs:
            warnings.warn(m, stacklevel=stacklevel)
        if on_total is not None:
            on_total(self.work(pre.mask))
        amap, rest = self.map_preprocessed(pre.image, pre.mask, progress, return_restored=True)
        _check_finite(amap, scan)
        score = volume_score(amap[pre.mask], voxel_mm3=float(np.prod(spacing)))
        return amap, rest, score, msgs

    def _map_resampled(self, scan: Any, mask: np.ndarray | None, pre: Any,
                       target: Any, progress: Callable[[int], None] | None,
                       on_total: Callable[[int], None] | None
                       ) -> tuple[np.ndarray, np.ndarray, float, list[str]]:
        """Map ``scan`` at the training voxel size ``target`` and bring the map back.

        Returns:
            ``(map, restoration)`` cropped like ``pre`` (the scan's own grid, trilinear), the
            volume score (at the training spacing, as the network saw the scan) and the
            sanity warnings.
        """
        from disyre.data.intensity import brain_mask, normalize, uncrop
        from disyre.data.nifti import InputError, voxel_size_text

        target = tuple(float(v) for v in target)
        shape = resampled_shape(scan.data.shape, scan.spacing, target)
        data, brain = image_and_brain_to_shape(scan.data, brain_mask(scan.data, mask), shape)
        try:
            pre_t = normalize(data, brain, self.cfg.intensity, spacing=target)
        except ValueError as e:
            raise InputError(f"{scan.path}: at the training voxel size: {e}") from e
        log.info("%s: voxel size %s resampled to the training data's %s (%s -> %s voxels), "
                 "the map interpolated back onto the scan's grid (--no-resample: as it is)",
                 scan.path, voxel_size_text(scan.affine, scan.spacing),
                 voxel_size_text(scan.affine, target), "x".join(map(str, scan.data.shape)),
                 "x".join(map(str, shape)))
        reference = {k: v for k, v in self.reference.items() if k != "spacing"}
        amap_t, rest_t, score, msgs = self._map_checked(scan, pre_t, reference, target,
                                                        progress, on_total)
        full = scan.data.shape
        amap = zoom_to_shape(uncrop(amap_t, pre_t), full, order=1)[pre.bbox]
        rest = zoom_to_shape(uncrop(rest_t, pre_t), full, order=1)[pre.bbox]
        amap = np.clip(amap, 0, 1) * pre.mask  # the scan's own brain, as on its own grid
        return amap.astype(np.float32), rest.astype(np.float32), score, msgs

    def map_preprocessed(self, image: np.ndarray, mask: np.ndarray,
                         progress: Callable[[int], None] | None = None,
                         return_restored: bool = False, raw: bool = False
                         ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Map of an already preprocessed, cropped axial-first volume (see :func:`predict_volume`),
        post-processed as :meth:`postprocessing` says (``raw=True``: not at all, for
        :meth:`post_process`).

        Noising corruptions (the Gaussian and diffusion baselines) draw from a generator
        seeded with ``self.seed``, so the same volume always gets the same map.
        """
        if self.inference.compile and not getattr(self.model, "compiled", False):
            from disyre.model import compile_network

            compile_network(self.model)
        gen = None
        if self.corruption is not None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(self.seed)
        return predict_volume(self.model, image, mask, self.inference, self.corruption, gen,
                              self.device, self.channels_last, progress,
                              return_restored=return_restored,
                              post=IDENTITY if raw else self.postprocessing())

    def work(self, pre_mask: np.ndarray) -> int:
        """Number of network inputs (windows or slices) :meth:`predict` runs for a brain mask."""
        return count_work(pre_mask, self.inference, _size_multiple(self.model))


def _check_finite(amap: np.ndarray, scan: Any) -> None:
    if not np.isfinite(amap).all():
        raise DetectionError(
            f"{scan.path}: the anomaly map holds NaN or Inf ({int((~np.isfinite(amap)).sum())}"
            f" voxels): the network's output is not finite (a damaged checkpoint, or bf16 "
            f"overflow: try precision fp32)")


def with_inference_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Copy of ``cfg`` with fields of its ``inference`` section replaced (validated)."""
    from disyre.config import apply_overrides

    if not overrides:
        return cfg
    names = {f.name for f in dataclasses.fields(InferenceConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown inference setting(s) {unknown}; choose from {sorted(names)}")
    import json

    return apply_overrides(cfg, [f"inference.{k}={json.dumps(v)}" for k, v in overrides.items()])


def load_checkpoint(path: str | Path, device: str | torch.device = "auto", *,
                    check_weights: bool = True
                    ) -> tuple[nn.Module, RunConfig, dict[str, Any]]:
    """Load a disyre checkpoint: ``(model in eval mode, RunConfig, config.json contents)``.

    Raises:
        FileNotFoundError: Nothing at ``path``.
        WeightsMismatchError: The weights are not the ones the checkpoint recorded
            (``check_weights=False``: a warning).
        ValueError: ``path`` exists but is not a disyre model (message names the path).
    """
    from disyre.training.checkpoint import WeightsMismatchError, load_model, read_checkpoint_meta
    from disyre.training.loop import report_run_status

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: checkpoint not found")
    report_run_status(p)  # a run that died or is still training: said before its model is used
    try:
        _, meta = read_checkpoint_meta(p)
        model, cfg = load_model(p, device, check_weights=check_weights)
    except WeightsMismatchError:
        raise  # names the weights file and the flag that overrides the check
    except FileNotFoundError as e:
        raise ValueError(f"{p}: not a disyre model ({e})") from e
    except (RuntimeError, KeyError, ConfigError, OSError) as e:
        raise ValueError(f"{p}: not a disyre model or a damaged checkpoint ({e})") from e
    if not isinstance(meta, dict) or "run" not in meta:
        raise ValueError(f"{p}: not a disyre model (config.json has no 'run' section)")
    return model, cfg, meta


def _inference_corruption(cfg: RunConfig) -> InferenceInput | None:
    """The corruption whose ``inference_input`` feeds the network; ``None`` = the image itself."""
    from disyre.methods import get_method

    method = get_method(cfg.corruption.name)
    if not method.inference_input:
        return None  # synthetic anomalies, dae: the network sees the image as it is
    return method.make_corruption(cfg.corruption)


def save_overlay_png(result: DetectionResult, path: str | Path, threshold: float | None = None,
                     n_slices: int = 3) -> None:
    """PNG of a few axial slices: the scan, the map as a heat overlay, the thresholded contour.

    The slices are those with the highest map values (spread over the volume). Images are
    shown in neurological convention: the patient's left on the left, anterior at the top.

    Args:
        result: A detection result.
        path: Output ``.png`` (written atomically).
        threshold: Contour level; default = half the map's maximum.
        n_slices: Number of axial slices (rows).
    """
    # a Figure of its own, not pyplot: the caller's matplotlib backend (a notebook's) stays
    from matplotlib.figure import Figure

    from disyre.io_utils import atomic_path

    amap, img = result.map_cropped, result.image_cropped
    d = amap.shape[0]
    per_slice = amap.reshape(d, -1).max(1)
    order = [int(k) for k in np.argsort(-per_slice, kind="stable")]
    chosen: list[int] = []
    for k in order:  # highest slices first, at least d / (2 n) apart
        if all(abs(k - c) >= max(1, d // (2 * n_slices)) for c in chosen):
            chosen.append(k)
        if len(chosen) == n_slices:
            break
    chosen.sort()
    level = threshold if threshold is not None else 0.5 * float(amap.max() or 1.0)
    vmax = max(float(amap.max()), 1e-6)
    fig = Figure(figsize=(9, 3 * len(chosen)))
    axes = fig.subplots(len(chosen), 3, squeeze=False)
    for row, k in zip(axes, chosen, strict=True):
        for ax in row:
            ax.imshow(img[k][::-1], cmap="gray", vmin=0, vmax=1)
            ax.axis("off")
        row[0].set_title(f"slice {k}: scan")
        heat = np.ma.masked_where(amap[k] <= 0, amap[k])[::-1]
        im = row[1].imshow(heat, cmap="inferno", alpha=0.7, vmin=0, vmax=vmax)
        row[1].set_title("anomaly map")
        if (amap[k] > level).any() and (amap[k] <= level).any():
            row[2].contour(amap[k][::-1], levels=[level], colors="red", linewidths=1)
        row[2].set_title(f"map > {level:.3g}")
        fig.colorbar(im, ax=row[1], fraction=0.046)
    fig.suptitle(f"{Path(str(result.scan.path)).name}  score {result.score:.3f}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")

