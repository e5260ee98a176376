"""The thresholds file: its format, where it lives, and the maps it binds to.

``disyre evaluate --save-thresholds`` fits thresholds on the anomaly maps of healthy scans
(:mod:`disyre.evaluation.thresholds` computes them) and writes them here;
``disyre detect --threshold fpr=0.01`` reads them. A threshold only means "1 % of healthy
brain voxels score above it" for maps made exactly like the ones it was fitted on, so the file
records what made those maps:

- ``inference``: the settings of the ``inference`` config section that change a map
  (:data:`MAP_SETTINGS`: the method, its levels or steps, window, stride, foreground
  weighting, median filter; not the batch size, precision, device, compilation or memory
  layout, which change it by float rounding at most);
- ``checkpoint``: the checkpoint folder and its training step, and the SHA-256 of the
  network's weights as loaded (the same whichever file or device they came from).

Applying the file to maps made otherwise is a :class:`ThresholdMismatchError` naming both
settings, unless the caller allows it (then a warning). A file without these records (written
before they existed, or fitted on maps given as files) gives a warning that it cannot be checked.

Where it lives: ``thresholds.json`` in the checkpoint's run folder (:func:`thresholds_path`:
the run folder for ``runs/t2`` and for ``runs/t2/checkpoints/step_0001000`` alike; the
checkpoint folder itself when it is not inside a run). Nothing else is searched: any other
file is named explicitly.

Format (``thresholds.json``)::

    {"fpr": {"0.01": t1, "0.05": t5, "0.1": t10}, "n_volumes": n, "n_voxels": m,
     "source": "...", "rule": "score > threshold", "method": "exact",
     "inference": {"method": "ensemble", "levels": [0, 25, 50, 75], "window": 0,
                   "stride": 32, "foreground_weighting": true, "median_filter": 0},
     "checkpoint": {"path": "/abs/runs/t2/checkpoints/step_0001000", "step": 1000,
                    "weights_sha256": "9f2c..."}}

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = save_thresholds(d / "thresholds.json", Thresholds({0.01: 0.3}, 2, 1000))
    >>> load_thresholds(d / "thresholds.json").fpr
    {0.01: 0.3}
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disyre.config import InferenceConfig
from disyre.io_utils import atomic_write_json

#: File name of the thresholds in a run folder.
THRESHOLDS_FILE = "thresholds.json"
#: The rule everywhere in disyre: a voxel is anomalous when ``score > threshold``.
RULE = "score > threshold"
#: ``inference`` settings that change a map (those of the other method are left out).
MAP_SETTINGS: tuple[str, ...] = ("method", "levels", "steps", "window", "stride",
                                 "foreground_weighting", "median_filter", "postprocessing")
#: the value of a map setting in a thresholds file written before it existed
LEGACY_MAP_SETTINGS: dict[str, Any] = {"postprocessing": "shared"}
#: Flag (and keyword) that applies thresholds to maps made otherwise.
ALLOW_FLAG = "--allow-threshold-mismatch"


class ThresholdError(ValueError):
    """A thresholds file is missing, invalid, or lacks the requested rate (message names it)."""


class ThresholdMismatchError(ThresholdError):
    """Thresholds fitted on maps made with other inference settings or another checkpoint."""


def fpr_key(f: float) -> str:
    """JSON key of a false-positive rate: ``0.01 -> "0.01"``, ``0.1 -> "0.1"``."""
    return format(float(f), "g")


@dataclass
class Thresholds:
    """Calibrated thresholds.

    Attributes:
        fpr: False-positive rate -> threshold (anomalous when ``score > threshold``).
        n_volumes: Healthy volumes fitted on.
        n_voxels: Healthy brain voxels fitted on.
        source: Free text naming the data (e.g. the manifest).
        method: ``exact`` or ``histogram``.
        extra: Other keys of the file, kept as they are.
        inference: The map settings of the maps fitted on (:func:`map_settings`); ``None``
            when unknown.
        checkpoint: ``{"path", "step", "weights_sha256"}`` of the model that made them;
            ``None`` when unknown.
    """

    fpr: dict[float, float]
    n_volumes: int
    n_voxels: int
    source: str = ""
    method: str = "exact"
    extra: dict[str, Any] = field(default_factory=dict)
    inference: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (keys of ``fpr`` as strings)."""
        d = {"fpr": {fpr_key(k): float(v) for k, v in sorted(self.fpr.items())},
             "n_volumes": int(self.n_volumes), "n_voxels": int(self.n_voxels),
             "source": self.source, "rule": RULE, "method": self.method, **self.extra}
        if self.inference is not None:
            d["inference"] = dict(self.inference)
        if self.checkpoint is not None:
            d["checkpoint"] = dict(self.checkpoint)
        return d

    def at(self, rate: float, source: str | Path = "thresholds") -> float:
        """The threshold for false-positive rate ``rate``.

        Raises:
            ThresholdError: The file has no threshold at that rate (the message lists them).
        """
        for f, t in self.fpr.items():
            if abs(f - rate) < 1e-9:
                return float(t)
        raise ThresholdError(f"{source}: no threshold for fpr={rate:g} (has "
                             f"{', '.join(f'{f:g}' for f in sorted(self.fpr))})")


def save_thresholds(path: str | Path, thresholds: Thresholds) -> Path:
    """Write ``thresholds`` as JSON to ``path`` atomically; returns the path."""
    path = Path(path)
    atomic_write_json(path, thresholds.to_dict())
    return path


def load_thresholds(path: str | Path) -> Thresholds:
    """Read a thresholds JSON file written by :func:`save_thresholds`.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not a valid thresholds document (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: thresholds file not found")
    try:
        d = json.loads(path.read_text())
        fpr = {float(k): float(v) for k, v in d["fpr"].items()}
        inference, checkpoint = d.get("inference"), d.get("checkpoint")
        if not isinstance(inference, dict | None) or not isinstance(checkpoint, dict | None):
            raise TypeError("'inference' and 'checkpoint' must be JSON objects")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ThresholdError(f"{path}: not a thresholds file (expected a JSON object with "
                             f"'fpr': {{rate: threshold}}): {e}") from e
    if not fpr:
        raise ThresholdError(f"{path}: thresholds file lists no false-positive rate")
    known = {"fpr", "n_volumes", "n_voxels", "source", "rule", "method", "inference",
             "checkpoint"}
    return Thresholds(fpr=fpr, n_volumes=int(d.get("n_volumes", 0)),
                      n_voxels=int(d.get("n_voxels", 0)), source=str(d.get("source", "")),
                      method=str(d.get("method", "exact")),
                      extra={k: v for k, v in d.items() if k not in known},
                      inference=inference, checkpoint=checkpoint)


# ---- where the file lives ---------------------------------------------------------------------

def run_folder(checkpoint: str | Path) -> Path:
    """The run folder of ``checkpoint``: ``runs/t2`` for ``runs/t2`` and for
    ``runs/t2/checkpoints/step_0001000`` (or ``.../checkpoints/last``); a checkpoint folder
    that is not inside a run's ``checkpoints/`` is its own.

    Example:
        >>> str(run_folder("runs/t2/checkpoints/step_0001000"))
        'runs/t2'
    """
    p = Path(checkpoint)
    return p.parent.parent if p.parent.name == "checkpoints" else p


def thresholds_path(checkpoint: str | Path) -> Path:
    """Where a checkpoint's thresholds are written and looked up: ``<run folder>/thresholds.json``.

    Example:
        >>> str(thresholds_path("runs/t2"))
        'runs/t2/thresholds.json'
    """
    return run_folder(checkpoint) / THRESHOLDS_FILE


# ---- what the maps were made with -------------------------------------------------------------

def map_settings(inference: InferenceConfig) -> dict[str, Any]:
    """The settings of ``inference`` that change a map (:data:`MAP_SETTINGS`).

    The ensemble's ``levels`` or the multi-step ``steps``, whichever the method uses.

    Example:
        >>> map_settings(InferenceConfig(levels=[0, 50]))["levels"]
        [0, 50]
    """
    d = {k: getattr(inference, k) for k in MAP_SETTINGS}
    d.pop("steps" if inference.method == "ensemble" else "levels")
    if isinstance(d.get("levels"), tuple | list):
        d["levels"] = [int(v) for v in d["levels"]]
    return d


def weights_sha256(model: Any) -> str:
    """SHA-256 of a network's weights as loaded (names, dtypes, shapes and values of its
    ``state_dict``, in the standard memory layout): the same for the same checkpoint on any
    device or layout. An exported network (:mod:`disyre.inference.exported`) gives the hash
    of the weights it was exported from."""
    import torch

    recorded = getattr(model, "weights_sha256", None)
    if isinstance(recorded, str) and recorded:
        return recorded
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def checkpoint_record(detector: Any, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """``{"path", "step", "weights_sha256"}`` of the model of ``detector``.

    ``checkpoint`` (the run or checkpoint folder it was loaded from) gives the path and the
    step; without it, only the weights' hash is recorded.
    """
    rec: dict[str, Any] = {}
    if checkpoint is not None:
        from disyre.training.checkpoint import read_checkpoint_meta

        try:
            ckpt, meta = read_checkpoint_meta(checkpoint)
            rec["path"] = str(Path(ckpt).resolve())
            if "step" in meta:
                rec["step"] = int(meta["step"])
        except (OSError, ValueError):  # not a checkpoint folder: the weights still identify it
            rec["path"] = str(Path(checkpoint).resolve())
    rec["weights_sha256"] = weights_sha256(detector.model)
    return rec


def bind_thresholds(thresholds: Thresholds, detector: Any,
                    checkpoint: str | Path | None = None) -> Thresholds:
    """Record in ``thresholds`` the map settings and the checkpoint of ``detector``, the one
    whose maps they were fitted on (in place; returns them)."""
    thresholds.inference = map_settings(detector.inference)
    thresholds.checkpoint = checkpoint_record(detector, checkpoint)
    return thresholds


def _fmt(d: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k}={d[k]!r}" if isinstance(d.get(k), str) else f"{k}={d.get(k)}"
                     for k in keys)


def _ckpt_text(rec: dict[str, Any]) -> str:
    parts = [rec.get("path") or "an unnamed checkpoint"]
    if "step" in rec:
        parts.append(f"step {rec['step']}")
    if rec.get("weights_sha256"):
        parts.append(f"weights sha256 {str(rec['weights_sha256'])[:12]}")
    return f"{parts[0]} ({', '.join(parts[1:])})" if len(parts) > 1 else parts[0]


def check_binding(thresholds: Thresholds, detector: Any, checkpoint: str | Path | None = None,
                  *, source: str | Path = THRESHOLDS_FILE,
                  allow_mismatch: bool = False) -> list[str]:
    """Check that ``thresholds`` were fitted on maps made as ``detector`` makes them.

    Args:
        thresholds: The loaded thresholds.
        detector: The :class:`~disyre.inference.Detector` about to make the maps (its
            inference settings as they will be used, overrides included).
        checkpoint: The folder ``detector`` was loaded from (names its step).
        source: The thresholds file, for messages.
        allow_mismatch: Return a mismatch as a warning instead of raising.

    Returns:
        Warnings: an allowed mismatch; a file that records no settings or checkpoint.

    Raises:
        ThresholdMismatchError: Other map settings or another checkpoint, naming both.
    """
    return _check_maker(thresholds, map_settings(detector.inference),
                        checkpoint_record(detector, checkpoint), source=source,
                        allow_mismatch=allow_mismatch)


def _check_maker(thresholds: Thresholds, now: dict[str, Any], now_ck: dict[str, Any], *,
                 source: str | Path, allow_mismatch: bool) -> list[str]:
    """:func:`check_binding` against the map settings ``now`` and checkpoint record ``now_ck``
    of the maker of the maps."""
    problems: list[str] = []
    unknown: list[str] = []
    if thresholds.inference is None:
        unknown.append("inference settings")
    else:
        fitted = {**LEGACY_MAP_SETTINGS, **thresholds.inference}
        keys = [k for k in MAP_SETTINGS if (k in now or k in fitted) and
                fitted.get(k) != now.get(k)]
        if keys:
            problems.append(f"fitted on maps made with {_fmt(fitted, keys)}, these maps are "
                            f"made with {_fmt(now, keys)}")
    if thresholds.checkpoint is None:
        unknown.append("checkpoint")
    else:
        fitted_ck = thresholds.checkpoint
        differ = any(k in fitted_ck and k in now_ck and fitted_ck[k] != now_ck[k]
                     for k in ("weights_sha256", "step"))
        if differ:
            problems.append(f"fitted on maps of the checkpoint {_ckpt_text(fitted_ck)}, "
                            f"these maps come from {_ckpt_text(now_ck)}")
    out: list[str] = []
    if problems:
        msg = (f"{source}: thresholds do not fit these maps: " + "; ".join(problems)
               + f". Refit them with these settings (disyre evaluate --save-thresholds) or "
               f"pass {ALLOW_FLAG} to apply them anyway")
        if not allow_mismatch:
            raise ThresholdMismatchError(msg)
        out.append(msg.split(". Refit")[0] + f" (applied anyway: {ALLOW_FLAG})")
    if unknown:
        out.append(f"{source}: records no {' and no '.join(unknown)} of the maps it was fitted "
                   "on (an older file, or one fitted on given maps): cannot check that its "
                   "thresholds fit these maps")
    return out


# ---- what made a folder of maps ----------------------------------------------------------------

#: File ``disyre detect`` writes beside its maps: what made each of them
#: (``disyre_maps_shard<rank>of<n>.json`` for the shards of a distributed run).
MAPS_RECORD = "disyre_maps.json"


def maps_record_name(rank: int = 0, world: int = 1) -> str:
    """File name of the record of the maps written by shard ``rank`` of ``world``."""
    return MAPS_RECORD if world == 1 else f"disyre_maps_shard{rank}of{world}.json"


def maps_maker(detector: Any, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """``{"inference": map settings, "checkpoint": checkpoint record}`` of ``detector``'s maps."""
    return {"inference": map_settings(detector.inference),
            "checkpoint": checkpoint_record(detector, checkpoint)}


def write_maps_record(folder: str | Path, names: list[str], maker: dict[str, Any],
                      rank: int = 0, world: int = 1) -> Path:
    """Record that the maps ``names`` of ``folder`` were made by ``maker`` (:func:`maps_maker`),
    keeping the entries of maps written earlier into the folder (atomic)."""
    path = Path(folder) / maps_record_name(rank, world)
    doc = {"maps": {}}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            doc["maps"] = dict(old.get("maps") or {})
        except (OSError, json.JSONDecodeError, AttributeError, TypeError):
            pass  # unreadable: rewritten with this run's maps
    for n in names:
        doc["maps"][n] = maker
    atomic_write_json(path, doc)
    return path


def read_maps_records(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Map file name -> its maker, from every record :func:`write_maps_record` left in
    ``folder`` (empty when there is none, e.g. maps written by another program)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(folder).glob("disyre_maps*.json")):
        try:
            maps = json.loads(path.read_text()).get("maps") or {}
        except (OSError, json.JSONDecodeError, AttributeError) as e:
            raise ThresholdError(f"{path}: unreadable record of the maps ({e})") from e
        out.update({str(k): v for k, v in maps.items() if isinstance(v, dict)})
    return out


def check_maps_binding(thresholds: Thresholds, makers: list[dict[str, Any] | None], *,
                       source: str | Path = THRESHOLDS_FILE, maps: str | Path = "maps",
                       allow_mismatch: bool = False) -> list[str]:
    """:func:`check_binding` for maps read from files: ``makers`` holds what made each map
    (:func:`read_maps_records`; ``None`` where the folder records nothing).

    Raises:
        ThresholdMismatchError: A map made with other settings or another checkpoint.
    """
    out: list[str] = []
    seen: list[dict[str, Any]] = []
    for m in makers:
        if m is not None and m not in seen:
            seen.append(m)
            out += _check_maker(thresholds, dict(m.get("inference") or {}),
                                dict(m.get("checkpoint") or {}), source=source,
                                allow_mismatch=allow_mismatch)
    n_unknown = sum(m is None for m in makers)
    if n_unknown:
        out.append(f"{maps}: records nothing about what made {n_unknown} of its {len(makers)} "
                   f"map(s) (maps not written by disyre detect): cannot check that the "
                   f"thresholds of {source} fit them")
    return list(dict.fromkeys(out))


# ---- from a --threshold value to a number ------------------------------------------------------

@dataclass
class ThresholdChoice:
    """A binarisation threshold and where it came from.

    Attributes:
        value: The threshold (anomalous when ``map > value``).
        rate: The false-positive rate it was looked up at (``None`` for a plain number).
        path: The thresholds file it was read from (``None`` for a plain number).
        thresholds: That file's contents.
    """

    value: float
    rate: float | None = None
    path: Path | None = None
    thresholds: Thresholds | None = None

    def describe(self) -> str:
        """``0.1234`` or ``0.1234 (fpr=0.01 from runs/t2/thresholds.json)``."""
        if self.path is None:
            return f"{self.value:.4g}"
        return f"{self.value:.4g} (fpr={self.rate:g} from {self.path})"


def resolve_threshold(spec: float | str | None, *, thresholds_file: str | Path | None = None,
                      checkpoint: str | Path | None = None) -> ThresholdChoice | None:
    """The threshold of ``spec``: a number in [0, 1], or ``"fpr=RATE"`` read from
    ``thresholds_file``, else from :func:`thresholds_path` of ``checkpoint`` (nowhere else).

    Raises:
        ThresholdError: A bad ``spec``, no thresholds file, or no threshold at that rate.
    """
    if spec is None:
        if thresholds_file is not None:
            raise ThresholdError(f"{thresholds_file}: a thresholds file is read only for a "
                                 "threshold 'fpr=RATE' (e.g. --threshold fpr=0.01)")
        return None
    text = str(spec).strip()
    if not text.startswith("fpr="):
        try:
            t = float(text)
        except ValueError as e:
            raise ThresholdError(f"threshold {text!r}: expected a number or fpr=RATE") from e
        if not 0 <= t <= 1:
            raise ThresholdError(f"threshold {t}: maps lie in [0, 1]; give a value in [0, 1]")
        if thresholds_file is not None:
            raise ThresholdError(f"{thresholds_file}: a thresholds file is read only for a "
                                 f"threshold 'fpr=RATE', not for the number {t:g}")
        return ThresholdChoice(t)
    try:
        rate = float(text[4:])
    except ValueError as e:
        raise ThresholdError(f"threshold {text!r}: expected fpr=RATE, e.g. fpr=0.01") from e
    if thresholds_file is None:
        if checkpoint is None:
            raise ThresholdError(f"threshold {text!r}: needs a thresholds file or the "
                                 "checkpoint whose run folder holds one")
        path = thresholds_path(checkpoint)
        if not path.is_file():
            raise ThresholdError(
                f"{path}: no thresholds file in the checkpoint's run folder (the only place "
                "looked); run `disyre evaluate --checkpoint ... --save-thresholds` on healthy "
                "scans, or name a file with --thresholds-file")
    else:
        path = Path(thresholds_file)
    try:
        th = load_thresholds(path)
    except FileNotFoundError as e:
        raise ThresholdError(str(e)) from e
    return ThresholdChoice(th.at(rate, path), rate, path, th)
