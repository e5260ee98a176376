"""The voxel-wise healthy-population reference baseline."""

from __future__ import annotations

import numpy as np
import pytest

from disyre.evaluation import metrics as M
from disyre.evaluation.baselines import ReferenceModel, fit_reference


def _anatomy(shape=(8, 32, 32)) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r = np.sqrt(z**2 + y**2 + x**2)
    vol = np.where(r < 0.9, 0.4 + 0.3 * np.cos(6 * r), 0.0)
    return vol.astype(np.float32)


def test_reference_detects_planted_bright_blob() -> None:
    rng = np.random.default_rng(0)
    base = _anatomy()
    brain = base > 0
    healthy = [(base + 0.03 * rng.standard_normal(base.shape)) * brain for _ in range(15)]
    ref = fit_reference(iter(healthy))  # a one-pass iterator is enough
    assert ref.n_volumes == 15
    np.testing.assert_allclose(ref.mean[brain], base[brain], atol=0.04)
    test = (base + 0.03 * rng.standard_normal(base.shape)) * brain
    lab = np.zeros(base.shape, bool)
    lab[3:6, 12:18, 12:18] = True
    test[lab] += 0.3
    amap = ref.predict(test, brain)
    assert amap.dtype == np.float32 and amap.min() >= 0 and amap.max() < 1
    assert (amap[~brain] == 0).all()
    res = M.pixel_metrics([(amap, lab, brain)])
    assert res.ap > 0.9 and res.auroc > 0.99
    assert amap[lab].mean() > 3 * amap[brain & ~lab].mean()


def test_save_load_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(1)
    ref = fit_reference(rng.random((3, 4, 5, 6)), k=2.0)
    p = ref.save(tmp_path / "ref.npz")
    back = ReferenceModel.load(p)
    np.testing.assert_array_equal(back.mean, ref.mean)
    np.testing.assert_array_equal(back.std, ref.std)
    assert (back.k, back.n_volumes) == (2.0, 3)
    x = rng.random((4, 5, 6))
    np.testing.assert_array_equal(back.predict(x), ref.predict(x))


def test_bad_input_is_rejected(tmp_path) -> None:
    with pytest.raises(ValueError, match="common grid"):
        fit_reference([np.zeros((2, 3, 3)), np.zeros((2, 3, 4))])
    with pytest.raises(ValueError, match="at least 2"):
        fit_reference([np.zeros((2, 3, 3))])
    ref = fit_reference([np.zeros((2, 3, 3)), np.ones((2, 3, 3))])
    with pytest.raises(ValueError, match="reference grid"):
        ref.predict(np.zeros((2, 3, 4)))
    bad = tmp_path / "x.npz"
    np.savez(bad, a=np.zeros(2))
    with pytest.raises(ValueError, match="x.npz"):
        ReferenceModel.load(bad)
