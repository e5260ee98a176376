"""Make the legacy-checkpoint fixtures: one tiny trained checkpoint per learned method and
the map it produces on a fixed synthetic volume.

These files were made with the release before the ``disyre.methods`` package (the methods
defined by ``config.py`` tables and ``if name == ...`` dispatch); ``test_legacy_checkpoints.py``
checks that the current code loads each checkpoint and maps the volume identically. Re-running
this script with newer code replaces the fixtures with that code's output, which defeats the
check: do so only on purpose (``--overwrite``).

Run from the repository root::

    PYTHONPATH=src:. python tests/data/legacy_checkpoints/make.py --overwrite

Each ``<method>/`` folder holds ``model.safetensors`` and ``config.json`` (the checkpoint; the
optimizer state is left out) and ``maps.npz``: ``volume`` and ``mask`` (the input), and for
each inference setting stored, ``map_<name>`` and ``restored_<name>`` (float32).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]

#: method -> extra ``--set`` overrides of its tiny run (whole slices; a short walk for anoddpm)
METHODS: dict[str, list[str]] = {
    "dag": [],
    "gaussian": [],
    "dae": [],
    "anoddpm": ["inference.steps=5"],
    "pddpm": [],
}
#: the extra inference settings mapped besides the checkpoint's own (name -> overrides)
EXTRA: dict[str, dict[str, dict[str, object]]] = {
    "dag": {"multistep": {"method": "multistep", "steps": 3}},
    "gaussian": {"multistep": {"method": "multistep", "steps": 3}},
}
STEPS = 30


def volume() -> tuple[np.ndarray, np.ndarray]:
    """The fixed input: a synthetic brain ``(4, 40, 40)`` and its mask."""
    from tests.helpers import synthetic_cohort

    vol = synthetic_cohort(1, seed=11, shape=(4, 40, 40))[0]
    return vol, vol > 0


def make(name: str, work: Path) -> None:
    """Train ``name`` for :data:`STEPS` steps and write its fixture folder."""
    from disyre.config import apply_overrides
    from disyre.inference import Detector
    from disyre.training import train
    from tests.helpers import synthetic_cohort, tiny_config

    cfg = tiny_config(steps=STEPS, lr=3e-3, warmup_steps=5, seed=0)
    cfg = apply_overrides(cfg, [f"corruption.name={name}", "inference.window=0",
                                *METHODS[name]])
    cohort = synthetic_cohort(6, seed=0)
    out = work / name
    train(cfg, cohort[:4], cohort[4:], out, progress=False,
          data_info={"contrast": "t2", "spacing": [2.0, 2.0, 2.0]})
    ckpt = out / "checkpoints" / "last"
    dst = HERE / name
    dst.mkdir(exist_ok=True)
    for f in ("model.safetensors", "config.json"):
        shutil.copyfile(ckpt / f, dst / f)
    vol, mask = volume()
    arrays: dict[str, np.ndarray] = {"volume": vol, "mask": mask}
    for label, over in {"default": {}, **EXTRA.get(name, {})}.items():
        det = Detector.from_checkpoint(dst, device="cpu", precision="fp32", **over)
        amap, rest = det.map_preprocessed(vol, mask, return_restored=True)
        again = det.map_preprocessed(vol, mask)
        if not np.array_equal(amap, again):
            raise SystemExit(f"{name}/{label}: two runs of the same detector differ")
        arrays[f"map_{label}"] = amap.astype(np.float32)
        arrays[f"restored_{label}"] = rest.astype(np.float32)
    np.savez_compressed(dst / "maps.npz", **arrays)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--overwrite", action="store_true", help="replace existing fixtures")
    p.add_argument("--work", type=Path, default=Path("/tmp/legacy_checkpoints_work"))
    args = p.parse_args()
    # this repository's tests/ (a namespace package, which another installed ``tests`` would hide)
    pkg = types.ModuleType("tests")
    pkg.__path__ = [str(ROOT / "tests")]
    sys.modules["tests"] = pkg
    for name in METHODS:
        if (HERE / name).exists() and not args.overwrite:
            raise SystemExit(f"{HERE / name}: exists (use --overwrite)")
    shutil.rmtree(args.work, ignore_errors=True)
    for name in METHODS:
        make(name, args.work)
        print(name, "done")


if __name__ == "__main__":
    main()
