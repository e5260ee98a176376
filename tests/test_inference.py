"""Restoration maths, windowing and volume maps of disyre.inference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from torch import nn

from disyre.config import ConfigError, InferenceConfig, ModelConfig
from disyre.corruption.schedule import multistep_levels, severity_of
from disyre.inference import (
    anomaly_map_slices,
    count_work,
    predict_volume,
    restore,
    window_starts,
)
from disyre.methods.dag import restore_ensemble, restore_multistep
from disyre.model import build_model
from tests.helpers import phantom, reinit_tiny_net, write_nifti


class SmoothingNet(nn.Module):
    """A predictable stand-in for a trained network: it "restores" by smoothing within the brain.

    ``P(x, k) = x + s_k (S(x) - x)`` with ``S`` a foreground-normalised box blur and ``s_k`` the
    severity of level ``k`` (more severe level -> stronger restoration). Small bright blobs
    are pulled towards their surroundings, so their residual is large; flat brain and brain
    edges give almost none.
    """

    min_size = 1

    def __init__(self, k: int = 9) -> None:
        super().__init__()
        self.k = k
        self.dummy = nn.Parameter(torch.zeros(()))
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        fg = (x > 0).float()
        num = F.avg_pool2d(x, self.k, 1, self.k // 2, count_include_pad=False)
        den = F.avg_pool2d(fg, self.k, 1, self.k // 2, count_include_pad=False).clamp_min(1e-6)
        s = severity_of(level.cpu()).to(x.device).view(-1, 1, 1, 1)
        return x + s * ((num / den) * fg - x) + self.dummy


def raw_config(**kw: object) -> InferenceConfig:
    """Inference settings without the default median filter: these tests check the maps'
    maths (blending, weighting, restoration) exactly; the filter has its own test."""
    return InferenceConfig(median_filter=0, **kw)  # type: ignore[arg-type]


def tiny_net(seed: int = 0) -> nn.Module:
    """A tiny U-Net whose output depends on its input, context and level (not MONAI's zeros)."""
    return reinit_tiny_net(seed)


def test_helper_networks_output_something():
    """A fresh MONAI network outputs exactly 0 (why tests use re-initialised ones); ours does not,
    and its output depends on the level and on the window around a pixel."""
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    lv = torch.tensor([0, 0])
    with torch.no_grad():
        assert build_model(ModelConfig.from_preset("tiny")).eval()(x, lv).abs().max() == 0
        net = tiny_net()
        y = net(x, lv)
        assert 0 < y.min() and y.max() < 1  # not clipped by restoration
        assert (y - net(x, torch.tensor([60, 60]))).abs().mean() > 1e-3
        assert (y[..., :16, :16] - net(x[..., :16, :16], lv)).abs().mean() > 1e-2
        assert (y[0] - y[1]).abs().mean() > 1e-2


def test_batched_levels_equal_unbatched_loop():
    net = tiny_net()
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    levels = [0, 20, 40, 60, 80]
    with torch.inference_mode():
        a1, r1 = restore_ensemble(net, x, levels, batch_levels=True)
        a2, r2 = restore_ensemble(net, x, levels, batch_levels=False)
        # and by hand, one level at a time
        by_hand = torch.stack(
            [(x - net(x, torch.full((3,), k)).clamp(0, 1)).abs() for k in levels]).mean(0)
    torch.testing.assert_close(a1, a2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(r1, r2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a1, by_hand, atol=1e-5, rtol=1e-4)


def test_levels_go_through_network_as_one_batch():
    net = SmoothingNet()
    vol, _ = phantom(shape=(4, 40, 40), lesion=(2, 20, 20))
    cfg = raw_config(levels=[0, 25, 50, 75], window=32, stride=16, batch_size=100)
    predict_volume(net, vol, None, cfg)
    n_windows = count_work(vol != 0, cfg)
    assert net.calls == [n_windows * 4]


def test_multistep_follows_cold_diffusion_update():
    net = SmoothingNet()
    x = torch.zeros(1, 1, 24, 24)
    x[..., 4:20, 4:20] = 0.5
    x[..., 10:13, 10:13] = 1.0
    amap, restored = restore_multistep(net, x, steps=3)
    # the same walk written out
    levels = multistep_levels(3)
    xt, acc = x.clone(), torch.zeros_like(x)
    for i, t in enumerate(levels):
        x0 = net(xt, torch.tensor([t])).clamp(0, 1)
        acc += (xt - x0).abs()
        a_prev = float(severity_of(levels[i + 1])) if i + 1 < len(levels) else 0.0
        xt = (x0 + a_prev / float(severity_of(t)) * (xt - x0)).clamp(0, 1)
    torch.testing.assert_close(amap, acc / 3)
    torch.testing.assert_close(restored, x0)


def test_restore_rejects_unknown_method():
    with pytest.raises(ConfigError, match="method"):
        restore(SmoothingNet(), torch.rand(1, 1, 8, 8), InferenceConfig(method="nope"))


def test_window_starts_match_monai_grid():
    from monai.data.utils import dense_patch_slices

    for size in (128, 129, 150, 162, 200):
        ours = window_starts(size, 128, 32)
        theirs = sorted({s[0].start for s in dense_patch_slices((size,), (128,), (32,))})
        assert ours == theirs, size


@pytest.mark.parametrize("shape,win,stride", [((2, 90, 100), 64, 16),
                                               ((2, 40, 50), 40, 10)])  # fitted to the slice
def test_windows_equal_monai_sliding_window_inference(shape, win, stride):
    """Own windowing (batched across slices, empty windows skipped) == MONAI's on the brain."""
    net = tiny_net(1)
    rng = np.random.default_rng(0)
    vol = np.zeros(shape, np.float32)
    d, h, w = shape
    vol[:, 6:h - 4, 10:w - 3] = rng.uniform(0.1, 1, (d, h - 10, w - 13))
    cfg = raw_config(levels=[0, 50], window=64, stride=16, batch_size=7,
                          foreground_weighting=False)
    ours = predict_volume(net, vol, None, cfg)
    x = torch.from_numpy(vol).unsqueeze(1)
    with torch.inference_mode():
        ref = sliding_window_inference(
            x, (win, win), 4, lambda p: restore(net, p, cfg)[0], overlap=1 - stride / win,
            mode="gaussian", sigma_scale=0.125)
    ref = (ref[:, 0] * torch.from_numpy(vol != 0)).numpy()
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_window_larger_than_the_slices_is_fitted_to_them(caplog):
    """Slices of a 2 mm scan are smaller than the default 128-px window: the window shrinks to
    fit them (same overlap) instead of padding, which scaled the map down through the
    foreground weighting (about 10x)."""
    net = SmoothingNet()
    vol, les = phantom(shape=(12, 50, 60), lesion=(6, 22, 30))
    cfg = raw_config(levels=[40, 80], window=128, stride=32)
    with caplog.at_level("INFO", logger="disyre.inference.windows"):
        big = predict_volume(net, vol, None, cfg)
    assert "using 50-px windows, stride 12" in caplog.text
    fits = predict_volume(net, vol, None, dataclasses.replace(cfg, window=50, stride=12))
    np.testing.assert_array_equal(big, fits)
    assert count_work(vol != 0, cfg, net.min_size) == count_work(
        vol != 0, dataclasses.replace(cfg, window=50, stride=12))
    # the map keeps the scale of the residual (measured 0.60x of the unweighted map), unlike
    # slices padded to the window (the old behaviour: 0.10x)
    raw = predict_volume(net, vol, None, dataclasses.replace(cfg, window=32, stride=8,
                                                             foreground_weighting=False))
    assert big[les].mean() > 0.5 * raw[les].mean()
    padded = np.pad(vol, ((0, 0), (39, 39), (34, 34)))
    old = predict_volume(net, padded, None, cfg)[:, 39:-39, 34:-34]
    assert old[les].mean() < 0.2 * raw[les].mean()


def test_foreground_weighting_downweights_edge_windows():
    net = SmoothingNet()
    vol, _ = phantom()
    cfg = raw_config(levels=[40, 80], window=32, stride=8)
    on = predict_volume(net, vol, None, cfg)
    off = predict_volume(net, vol, None, dataclasses.replace(cfg, foreground_weighting=False))
    fg = vol != 0
    assert (on[fg] <= off[fg] + 1e-6).all()
    assert on[fg].mean() < off[fg].mean()
    assert (on[~fg] == 0).all() and (off[~fg] == 0).all()


@pytest.mark.parametrize("method", ["ensemble", "multistep"])
def test_planted_anomaly_scores_higher_inside(method):
    net = SmoothingNet()
    vol, les = phantom()
    cfg = raw_config(method=method, steps=4, window=32, stride=16)
    amap = predict_volume(net, vol, None, cfg)
    assert amap.shape == vol.shape and amap.dtype == np.float32
    assert 0 <= amap.min() and amap.max() <= 1
    brain = vol != 0
    assert amap[les].mean() > 3 * amap[brain & ~les].mean()
    # empty slices stay 0
    assert (amap[vol.reshape(len(vol), -1).max(1) == 0] == 0).all()


def test_v1_and_v2_agree_on_location():
    net = SmoothingNet()
    vol, les = phantom()
    v2 = predict_volume(net, vol, None, raw_config(window=32, stride=16))
    v1 = predict_volume(net, vol, None, raw_config(method="multistep", steps=5, window=32,
                                                        stride=16))
    top = les.sum()
    top2 = v2 >= np.sort(v2.ravel())[-top]
    top1 = v1 >= np.sort(v1.ravel())[-top]
    assert (top1 & les).sum() > 0.7 * top and (top2 & les).sum() > 0.7 * top
    assert (top1 & top2).sum() > 0.7 * top


def test_whole_slice_mode_close_to_windows_for_a_convolutional_model():
    net = SmoothingNet()
    vol, les = phantom()
    ref = predict_volume(net, vol, None, raw_config(window=32, stride=8))
    whole = predict_volume(net, vol, None, raw_config(window=0, stride=8))
    assert whole.shape == vol.shape
    from sklearn.metrics import average_precision_score

    brain = vol != 0
    ap_ref = average_precision_score(les[brain], ref[brain])
    ap_whole = average_precision_score(les[brain], whole[brain])
    assert abs(ap_ref - ap_whole) < 0.01


def test_median_filter_removes_isolated_voxels_and_keeps_background_zero():
    net = SmoothingNet()
    vol, _ = phantom()
    vol[6, 50, 20] = 1.0  # one hot voxel: a median filter should wipe it out
    cfg = raw_config(levels=[80], window=32, stride=16)
    raw = predict_volume(net, vol, None, cfg)
    med = predict_volume(net, vol, None, dataclasses.replace(cfg, median_filter=3))
    assert med[6, 50, 20] < 0.5 * raw[6, 50, 20]
    assert (med[vol == 0] == 0).all()


def test_anomaly_map_slices_matches_volume_path():
    net = tiny_net(2)
    vol, _ = phantom(shape=(3, 48, 56), lesion=(1, 24, 28))
    cfg = raw_config(levels=[0, 60], window=32, stride=16)
    a = anomaly_map_slices(net, torch.from_numpy(vol).unsqueeze(1), cfg)
    assert a.shape == (3, 1, 48, 56)
    np.testing.assert_allclose(a[:, 0].numpy(), predict_volume(net, vol, None, cfg), atol=1e-6)


def test_bad_window_settings_raise():
    with pytest.raises(ConfigError, match="stride"):
        predict_volume(SmoothingNet(), np.ones((1, 8, 8), np.float32), None,
                       raw_config(window=32, stride=64))


def test_bf16_autocast_keeps_the_map_close():
    net = tiny_net(3)
    vol, _ = phantom(shape=(2, 48, 48), lesion=(1, 24, 24))
    cfg = raw_config(levels=[0, 60], window=32, stride=16, precision="fp32")
    ref = predict_volume(net, vol, None, cfg)
    bf = predict_volume(net, vol, None, dataclasses.replace(cfg, precision="bf16"))
    assert bf.dtype == np.float32
    assert 0 < np.abs(bf - ref).max() < 0.05  # autocast took effect, and the map is kept


# ---- Detector: scans on their own grid -------------------------------------------------------

def _nifti(tmp_path, name, vol_xyz, affine):
    return write_nifti(tmp_path / name, vol_xyz, affine, np.float32)


def _native_phantom(offset=(0, 0, 0), shape=(96, 90, 20)):
    """A brain + lesion placed at ``offset`` in a native (X, Y, Z) array of ``shape``."""
    vol, les = phantom(shape=(12, 72, 80), lesion=(6, 30, 44))  # (D, H, W) = (Z, Y, X)
    # a left-right intensity ramp, so that the lesion stays brighter than the brain after
    # the 98th-percentile normalisation
    vol = np.where(les, 1.0, vol * np.linspace(0.6, 1.4, 80)[None, None]).astype(np.float32)
    big = np.zeros(shape, np.float32)
    bl = np.zeros(shape, bool)
    ox, oy, oz = offset
    big[ox:ox + 80, oy:oy + 72, oz:oz + 12] = vol.transpose(2, 1, 0) * 800
    bl[ox:ox + 80, oy:oy + 72, oz:oz + 12] = les.transpose(2, 1, 0)
    return big, bl


def _detector(**kw):
    from disyre.config import RunConfig
    from disyre.inference import Detector

    cfg = RunConfig()
    cfg.inference = raw_config(window=32, stride=16, **kw)
    return Detector(SmoothingNet(), cfg, device="cpu")


@pytest.mark.parametrize("affine,offset", [
    (np.diag([1.0, 1.0, 1.0, 1.0]), (0, 0, 0)),            # RAS, brain in a corner
    (np.diag([-1.0, -1.0, 1.0, 1.0]), (10, 14, 5)),        # LPS, brain elsewhere
    (np.array([[0, 0, 1.2, 4], [-1.0, 0, 0, 7], [0, 1.0, 0, -3], [0, 0, 0, 1]]), (5, 3, 2)),
])
def test_detector_map_on_native_grid(tmp_path, affine, offset):
    import nibabel as nib

    from disyre.data.nifti import load_scan

    vol, les = _native_phantom(offset)
    path = _nifti(tmp_path, "scan.nii.gz", vol, affine)
    res = _detector().predict(path)
    assert res.anomaly_map.shape == vol.shape and res.anomaly_map.dtype == np.float32
    assert res.restored.shape == vol.shape
    assert 0 <= res.anomaly_map.min() and res.anomaly_map.max() <= 1
    # the lesion is found where it is in the file's own voxel layout
    brain = vol > 0
    assert res.anomaly_map[les].mean() > 3 * res.anomaly_map[brain & ~les].mean()
    assert (res.anomaly_map[~brain] == 0).all()
    res.save_map(tmp_path / "map.nii.gz")
    out = nib.load(tmp_path / "map.nii.gz")
    assert out.shape == vol.shape
    np.testing.assert_allclose(out.affine, nib.load(path).affine)
    np.testing.assert_array_equal(np.asarray(out.dataobj), res.anomaly_map)
    assert 0 < res.score <= 1
    assert res.map_cropped.shape == res.image_cropped.shape == res.mask_cropped.shape
    assert isinstance(res.scan, type(load_scan(path)))


def test_detector_score_is_higher_with_a_lesion(tmp_path):
    vol, les = _native_phantom()
    healthy = np.where(les, 400.0, vol).astype(np.float32)
    det = _detector()
    s_les = det.predict(_nifti(tmp_path, "a.nii.gz", vol, np.eye(4))).score
    s_ok = det.predict(_nifti(tmp_path, "b.nii.gz", healthy, np.eye(4))).score
    assert s_les > s_ok


def test_detector_warns_on_other_contrast(tmp_path):
    vol, _ = _native_phantom()
    det = _detector()
    path = _nifti(tmp_path, "a.nii.gz", vol, np.eye(4))
    pre_q = [0.2, 0.3, 0.4, 0.5, 0.6]  # unlike this phantom's flat ~0.5 brain
    det.reference = {"contrast": "T1", "intensity_quantiles": pre_q}
    with pytest.warns(UserWarning, match="differs from T1"):
        res = det.predict(path)
    assert any("T1" in w for w in res.warnings)
    from disyre.data.intensity import intensity_signature

    det.reference = {"intensity_quantiles": intensity_signature(res.image_cropped,
                                                                res.mask_cropped)}
    import warnings as _w

    with _w.catch_warnings():
        _w.simplefilter("error")
        det.predict(path)  # same data as the reference: no warning


def test_detector_warns_on_thick_slices(tmp_path):
    """Both voxel-size warnings give the size in one order, the file's own axes, named."""
    vol, _ = _native_phantom()
    # file axes i, j, k run toward R, S, A: 1 mm, 5 mm slices, 1 mm
    affine = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 5.0, 0, 0], [0, 0, 0, 1]])
    path = _nifti(tmp_path, "a.nii.gz", vol.transpose(0, 2, 1), affine)
    det = _detector()
    det.reference = {"spacing": [2.0, 2.0, 2.0]}
    det.resample = False  # mapped on its own grid (--no-resample): the size is warned about
    with pytest.warns(UserWarning, match="anisotropic"):
        res = det.predict(path)
    size = "voxel size 1 x 5 x 1 mm (file axes i, j, k toward R, S, A)"
    assert any(f"{size} is very anisotropic" in w for w in res.warnings)
    assert any(f"{size} differs from the training data's 2 x 2 x 2 mm" in w
               for w in res.warnings)


def test_detector_from_checkpoint_and_bad_checkpoints(tmp_path):
    from disyre.config import RunConfig
    from disyre.inference import Detector
    from disyre.training.checkpoint import save_checkpoint

    cfg = RunConfig()
    cfg.model = ModelConfig.from_preset("tiny")
    save_checkpoint(tmp_path / "run" / "checkpoints", step=1, model=tiny_net(4),
                    cfg=cfg, codebook=None, state={})
    det = Detector.from_checkpoint(tmp_path / "run", device="cpu", levels=[0, 50], window=64)
    assert det.inference.levels == [0, 50] and det.inference.window == 64
    vol, _ = _native_phantom()
    res = det.predict(_nifti(tmp_path, "a.nii.gz", vol, np.eye(4)))
    assert res.anomaly_map.shape == vol.shape
    # the saved weights map the scan, not a fresh (all-zero-output) network
    same = predict_volume(tiny_net(4), res.image_cropped, res.mask_cropped, det.inference)
    np.testing.assert_allclose(res.map_cropped, same, atol=1e-6)
    fresh = predict_volume(build_model(cfg.model).eval(), res.image_cropped, res.mask_cropped,
                           det.inference)
    assert np.abs(res.map_cropped - fresh).max() > 0.05
    with pytest.raises(ConfigError, match="unknown inference"):
        Detector.from_checkpoint(tmp_path / "run", device="cpu", levls=[0])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="junk"):
        Detector.from_checkpoint(tmp_path / "junk", device="cpu")
    with pytest.raises(FileNotFoundError):
        Detector.from_checkpoint(tmp_path / "nowhere", device="cpu")


def test_inference_channels_last_can_be_switched_off(tmp_path, monkeypatch):
    import disyre.model as model_mod
    from disyre.config import RunConfig
    from disyre.inference import Detector
    from disyre.training.checkpoint import save_checkpoint

    cfg = RunConfig()
    cfg.model = ModelConfig.from_preset("tiny")
    save_checkpoint(tmp_path / "run" / "checkpoints", step=1, model=tiny_net(4),
                    cfg=cfg, codebook=None, state={})
    monkeypatch.setitem(model_mod.CPU_CHANNELS_LAST, ("tiny", "fp32", "inference"), True)
    on = Detector.from_checkpoint(tmp_path / "run", device="cpu", precision="fp32")
    off = Detector.from_checkpoint(tmp_path / "run", device="cpu", precision="fp32",
                                   channels_last=False)
    assert on.channels_last and not off.channels_last
    assert on.model.unet.conv_in.conv.weight.is_contiguous(memory_format=torch.channels_last)
    vol, _ = _native_phantom()
    path = _nifti(tmp_path, "a.nii.gz", vol, np.eye(4))
    a, b = on.predict(path).anomaly_map, off.predict(path).anomaly_map
    assert np.abs(a).max() > 0.01
    np.testing.assert_allclose(a, b, atol=1e-3)  # fp32 sums in another order


def test_volume_score_is_top_k_mean():
    from disyre.inference import volume_score

    m = np.zeros(5000, np.float32)
    m[:10] = 1.0
    assert volume_score(m, top_k=10) == 1.0
    assert volume_score(m, top_k=20) == pytest.approx(0.5)


def test_nan_in_the_map_is_an_error_naming_the_scan(tmp_path):
    from disyre.inference import DetectionError

    class HalfNaN(SmoothingNet):
        def forward(self, x, level):
            out = super().forward(x, level)
            out[..., : out.shape[-2] // 2, :] = float("nan")
            return out

    det = _detector()
    det.model = HalfNaN()
    vol, _ = _native_phantom()
    path = _nifti(tmp_path, "bad.nii.gz", vol, np.eye(4))
    with pytest.raises(DetectionError, match=r"bad\.nii\.gz: the anomaly map holds NaN"):
        det.predict(path)
