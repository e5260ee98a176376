"""Checkpoints of the previous release load and map a volume as they did then.

``tests/data/legacy_checkpoints/<method>/`` holds a tiny checkpoint per learned method and the
maps it produced, with the code of the release before the ``disyre.methods`` package, on a
fixed synthetic volume (``make.py`` there wrote them). Each must load with today's code and give
the same maps (fp32 on the CPU, noise from the detector's seeded generator).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from disyre.inference import Detector

HERE = Path(__file__).resolve().parent / "data" / "legacy_checkpoints"
METHODS = ("dag", "gaussian", "dae", "anoddpm", "pddpm")
#: the extra inference settings make.py mapped (label -> Detector overrides)
EXTRA = {"multistep": {"method": "multistep", "steps": 3}}


def _cases() -> list[tuple[str, str]]:
    out = []
    for m in METHODS:
        with np.load(HERE / m / "maps.npz") as z:
            out += [(m, k[len("map_"):]) for k in z.files if k.startswith("map_")]
    return out


@pytest.mark.parametrize(("method", "label"), _cases())
def test_a_legacy_checkpoint_maps_the_volume_as_before(method: str, label: str) -> None:
    with np.load(HERE / method / "maps.npz") as z:
        stored = {k: z[k] for k in z.files}
    over = {} if label == "default" else EXTRA[label]
    det = Detector.from_checkpoint(HERE / method, device="cpu", precision="fp32", **over)
    assert det.cfg.corruption.name == method
    amap, restored = det.map_preprocessed(stored["volume"], stored["mask"], return_restored=True)
    assert float(stored[f"map_{label}"].std()) > 1e-3  # a map that says something
    np.testing.assert_allclose(amap, stored[f"map_{label}"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(restored, stored[f"restored_{label}"], rtol=0, atol=1e-5)


def test_every_learned_method_has_a_legacy_checkpoint() -> None:
    assert sorted(p.name for p in HERE.iterdir() if p.is_dir()) == sorted(METHODS)
