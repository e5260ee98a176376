"""Each baseline as its publication ran it by default, each deviation a switch
(docs/methods.md): no augmentation and no foreground weighting where the publication has
none, its own post-processing of the maps and of the thresholded masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from disyre.config import RunConfig, apply_overrides
from disyre.inference import Detector
from disyre.methods import get_method
from tests.helpers import reinit_tiny_net, synthetic_cohort, tiny_config

BASELINES = ("dae", "anoddpm", "pddpm")


def _config(name: str, *sets: str) -> RunConfig:
    cfg = apply_overrides(tiny_config(steps=2), [f"corruption.name={name}",
                                                 "corruption.augment=null",
                                                 "inference.foreground_weighting=null",
                                                 *sets])
    cfg.inference.batch_size = 64
    return cfg


@pytest.mark.parametrize("name", BASELINES)
def test_a_baseline_trains_without_augmentation_unless_switched_on(name: str) -> None:
    from disyre.training import BatchSource
    from disyre.training.batches import shard_seed

    cohort = synthetic_cohort(4, seed=1)
    s = shard_seed(0, 3, 0)
    own = BatchSource(cohort, _config(name))
    clean = own.sample_shard(s)
    assert not own.augment
    assert torch.equal(own.shard(0, 3, 0).clean, clean)  # the patches as drawn
    on = BatchSource(cohort, _config(name, "corruption.augment=true"))
    assert on.augment
    assert torch.equal(on.sample_shard(s), clean)  # the same draw ...
    assert not torch.equal(on.shard(0, 3, 0).clean, clean)  # ... augmented


def test_disyre_keeps_its_augmentation_by_default() -> None:
    from disyre.training import BatchSource

    assert BatchSource(synthetic_cohort(4, seed=1), _config("dag")).augment


def _detector(name: str, *sets: str) -> Detector:
    cfg = _config(name, "inference.window=0", *sets)
    return Detector(reinit_tiny_net(3), cfg, device="cpu", channels_last=False)


@pytest.mark.parametrize("name", ("dae", "pddpm"))
def test_a_baselines_map_is_not_foreground_weighted_unless_switched_on(name: str) -> None:
    vol = synthetic_cohort(1, seed=2)[0]
    mask = vol > 0
    own = _detector(name, "inference.median_filter=0")
    assert own.inference.foreground_weighting is False
    off = _detector(name, "inference.median_filter=0",
                    "inference.foreground_weighting=false")
    on = _detector(name, "inference.median_filter=0",
                   "inference.foreground_weighting=true")
    a, b, c = (d.map_preprocessed(vol, mask) for d in (own, off, on))
    np.testing.assert_array_equal(a, b)
    assert float(np.abs(a - c).max()) > 1e-3  # the weighting changes the map at the edge
    assert _detector("dag").inference.foreground_weighting is True


def test_an_old_checkpoints_explicit_settings_keep_their_behaviour() -> None:
    """Configs saved before the switches recorded ``augment: true`` and
    ``foreground_weighting: true``: both stay on for a baseline."""
    d = _config("dae").to_dict()
    d["corruption"]["augment"] = True
    d["inference"]["foreground_weighting"] = True
    cfg = RunConfig.from_dict(d)
    assert get_method("dae").augments(cfg.corruption)
    assert get_method("dae").resolved_inference(cfg.inference).foreground_weighting is True


# ---- post-processing through the detector --------------------------------------------------

def _brain() -> np.ndarray:
    z, y, x = np.mgrid[:12, :40, :40]
    return ((z - 5.5) / 7) ** 2 + ((y - 19.5) / 17) ** 2 + ((x - 19.5) / 17) ** 2 < 1


def _crafted(brain: np.ndarray) -> np.ndarray:
    """A raw map: 0.1 in the brain, a bright rim voxel, a bright 5 x 5 patch one slice thick,
    and a bright single voxel."""
    m = np.where(brain, 0.1, 0).astype(np.float32)
    ys, xs = np.nonzero(brain[6])
    m[6, ys[0], xs[0]] = 0.9  # on the brain's edge (the first row of the slice)
    m[6, 16:21, 16:21] = 0.8  # an in-plane blob, one slice thick
    m[3, 26, 26] = 0.7  # one isolated voxel
    return m


@pytest.mark.parametrize("name", ("dag", *BASELINES))
def test_each_published_post_processing_step_changes_what_it_should(name: str) -> None:
    brain = _brain()
    raw = _crafted(brain)
    ys, xs = np.nonzero(brain[6])
    edge = (6, ys[0], xs[0])
    pub, shared = (_detector(name, f"inference.postprocessing={p}").post_process(raw, brain)
                   for p in ("published", "shared"))
    # the shared protocol: a 3D 3-voxel median filter: edge voxel, the one-slice blob and the
    # single voxel all go
    assert shared[edge] < 0.2 and shared[6, 18, 18] < 0.2 and shared[3, 26, 26] < 0.2
    if name == "dag":  # DISYRE's published recipe is the shared one
        np.testing.assert_array_equal(pub, shared)
    elif name == "anoddpm":  # none: the map as it is
        np.testing.assert_array_equal(pub, raw)
    elif name == "dae":  # eroded mask (edge gone), 2D 5 x 5 median (the in-plane blob's
        assert pub[edge] == 0  # centre stays, the single voxel goes)
        assert pub[6, 18, 18] == pytest.approx(0.8) and pub[3, 26, 26] < 0.2
        assert not (pub[~brain] != 0).any()
    else:  # pddpm: eroded mask, 3D 5 x 5 x 5 median: the one-slice blob goes too
        assert pub[edge] == 0 and pub[6, 18, 18] < 0.2 and pub[3, 26, 26] < 0.2
        eroded = pub[6][brain[6]] == 0
        assert eroded.sum() > (brain[6] & ~np.roll(brain[6], 3, 0)).sum()  # 3 px of rim


def test_pddpm_removes_components_of_at_most_7_voxels_after_thresholding() -> None:
    det = _detector("pddpm")
    b = np.zeros((6, 20, 20), bool)
    b[1, 2:4, 2:5] = True  # 6 voxels
    b[1, 3, 5] = True  # 7
    b[3:5, 10:12, 10:12] = True  # 8 voxels
    kept = det.postprocessing().apply_binary(b)
    assert not kept[1].any() and kept[3:5, 10:12, 10:12].all()
    np.testing.assert_array_equal(
        _detector("pddpm", "inference.postprocessing=shared").postprocessing().apply_binary(b),
        b)


def test_the_detector_post_processes_its_maps_as_its_recipe_says() -> None:
    """``map_preprocessed`` = the raw map post-processed (one network run, two protocols)."""
    vol = synthetic_cohort(1, seed=2)[0]
    mask = vol > 0
    det = _detector("dae")
    raw = det.map_preprocessed(vol, mask, raw=True)
    np.testing.assert_allclose(det.map_preprocessed(vol, mask), det.post_process(raw, mask),
                               atol=0)
    shared = _detector("dae", "inference.postprocessing=shared")
    np.testing.assert_allclose(shared.map_preprocessed(vol, mask),
                               det.post_process(raw, mask, "shared"), atol=0)
    assert not np.array_equal(det.post_process(raw, mask), det.post_process(raw, mask,
                                                                            "shared"))


def test_a_saved_mask_loses_the_small_components_of_a_published_recipe(tmp_path) -> None:
    from disyre.inference.result import DetectionResult

    m = np.zeros((6, 20, 20), np.float32)
    m[1, 2, 2] = 1.0  # one voxel
    m[3:5, 10:12, 10:12] = 1.0  # 8 voxels
    brain = np.ones(m.shape, bool)
    captured = {}

    class _R(DetectionResult):
        def full(self, arr):
            captured["mask"] = arr
            raise StopIteration

    for det, expect in ((_detector("pddpm"), 8), (_detector("dae"), 9)):
        r = _R(anomaly_map=m, restored=m, score=0.0, map_cropped=m, restored_cropped=m,
               image_cropped=m, mask_cropped=brain, scan=None, pre=None,
               postprocessing=det.postprocessing())
        with pytest.raises(StopIteration):
            r.save_mask(tmp_path / "x.nii.gz", 0.5)
        assert int(captured["mask"].sum()) == expect


def test_the_evaluation_counts_after_the_component_step() -> None:
    from disyre.evaluation import evaluate_cases

    rng = np.random.default_rng(0)
    brain = _brain()
    lab = np.zeros(brain.shape, bool)
    lab[4:7, 18:21, 18:21] = True  # 27 voxels
    healthy = [(np.where(brain, rng.random(brain.shape) * 0.5, 0), brain) for _ in range(2)]

    def cases():
        m = np.where(brain, 0.1, 0.0)
        m[lab] = 0.9
        m[2, 10, 20] = 0.95  # a one-voxel false positive
        yield "s", m.astype(np.float32), lab, brain

    step = _detector("pddpm").postprocessing().apply_binary
    plain = evaluate_cases(cases(), healthy, fprs=(0.01,), n_boot=0, viewer=False)
    cc = evaluate_cases(cases(), healthy, fprs=(0.01,), n_boot=0, viewer=False,
                        binary_step=step)
    assert plain.calibrated[0.01]["fp"] == 1 and cc.calibrated[0.01]["fp"] == 0
    assert plain.calibrated[0.01]["tp"] == cc.calibrated[0.01]["tp"] == 27
    assert plain.thresholds.fpr == cc.thresholds.fpr
    assert cc.lesion_wise["at"]["0.01"]["fp_per_lesioned_scan"] < plain.lesion_wise["at"][
        "0.01"]["fp_per_lesioned_scan"]


def test_a_checkpoint_saved_before_the_setting_keeps_the_shared_protocol() -> None:
    from disyre.config import legacy_filled
    from disyre.inference.thresholds import (
        ThresholdMismatchError,
        Thresholds,
        check_binding,
        map_settings,
    )

    d = _config("pddpm").to_dict()
    del d["inference"]["postprocessing"]
    cfg = RunConfig.from_dict(legacy_filled(d))
    assert cfg.inference.postprocessing == "shared"
    assert RunConfig().inference.postprocessing == "published"
    # thresholds fitted before the setting existed were fitted on shared maps
    det = Detector(reinit_tiny_net(3), cfg, device="cpu", channels_last=False)
    fitted = map_settings(det.inference)
    del fitted["postprocessing"]
    th = Thresholds(fpr={0.01: 0.5}, n_volumes=1, n_voxels=100, inference=fitted)
    assert not any("postprocessing" in w for w in check_binding(th, det, None,
                                                                 source="t.json"))
    new = Detector(reinit_tiny_net(3), _config("pddpm"), device="cpu", channels_last=False)
    with pytest.raises(ThresholdMismatchError, match="postprocessing"):
        check_binding(th, new, None, source="t.json")


# ---- pDDPM's objective: L1 on the noised box ---------------------------------------------

def test_the_box_loss_is_the_mean_absolute_error_inside_the_box_only() -> None:
    from disyre.training.batches import Batch, batch_loss

    g = torch.Generator().manual_seed(0)
    clean = torch.rand(3, 1, 16, 16, generator=g)
    pred = torch.rand(3, 1, 16, 16, generator=g)
    box = torch.zeros(3, 1, 16, 16)
    box[0, :, :8, :8] = 1
    box[1, :, 8:, :8] = 1
    box[2, :, 8:, 8:] = 1
    b = Batch(clean, clean, torch.zeros(3, dtype=torch.long), region=box, loss="l1")
    inside = (pred - clean).abs()[box > 0]
    assert float(batch_loss(pred, b)) == pytest.approx(float(inside.mean()), rel=1e-6)
    moved = torch.where(box > 0, pred, pred + 5.0)  # outside the box: not in the loss
    assert float(batch_loss(moved, b)) == pytest.approx(float(inside.mean()), rel=1e-6)
    shared = Batch(clean, clean, torch.zeros(3, dtype=torch.long))
    assert float(batch_loss(pred, shared)) == pytest.approx(
        float(((pred - clean) ** 2).mean()), rel=1e-6)


def test_pddpm_batches_carry_the_noised_box_and_the_shared_objective_restores_mse() -> None:
    from disyre.training import BatchSource

    cohort = synthetic_cohort(4, seed=1)
    b = BatchSource(cohort, _config("pddpm")).shard(0, 1, 0)
    assert b.loss == "l1" and b.region is not None
    changed = (b.corrupted != (2 * b.clean - 1)).float()  # the signed patch, noised in the box
    per = b.region.sum((1, 2, 3))  # one box of 16 x 16 each (cut at the slice's edge)
    assert bool((changed <= b.region).all()) and bool(((per > 0) & (per <= 16 * 16)).all())
    old = BatchSource(cohort, _config("pddpm", "train.objective=shared")).shard(0, 1, 0)
    assert old.loss == "mse" and old.region is None
    assert BatchSource(cohort, _config("dae")).shard(0, 1, 0).region is None


def test_an_old_pddpm_checkpoint_trains_on_with_the_shared_objective() -> None:
    from disyre.config import legacy_filled

    d = _config("pddpm").to_dict()
    del d["train"]["objective"]
    cfg = RunConfig.from_dict(legacy_filled(d))
    assert get_method("pddpm").objective(cfg) == ("mse", "patch")
    assert get_method("pddpm").objective(_config("pddpm")) == ("l1", "box")


# ---- pDDPM's geometry: whole slices, one box of detection's grid -------------------------

class _Recorder(torch.nn.Module):
    """A network that records its inputs and returns them (detection's boxes are noised in
    the inputs it gets)."""

    min_size = 8

    def __init__(self) -> None:
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return x


def _detection_boxes(vol: np.ndarray, box: int) -> tuple[set, tuple[int, int], np.ndarray]:
    """The boxes pDDPM's detection noises on the slices of ``vol`` (corners in the padded
    frame), the frame size and the padded slices."""
    from disyre.config import InferenceConfig
    from disyre.corruption.diffusion import PatchedDiffusion, to_signed
    from disyre.inference.windows import predict_slices

    net = _Recorder()
    cfg = InferenceConfig(method="patched", levels=[499], window=0, batch_size=64,
                          foreground_weighting=False)
    predict_slices(net, vol, vol > 0, cfg, PatchedDiffusion(box=box), torch.Generator())
    d, h, w = vol.shape
    fh, fw = -(-h // 8) * 8, -(-w // 8) * 8
    py, px = (fh - h) // 2, (fw - w) // 2
    padded = np.zeros((d, fh, fw), np.float32)
    padded[:, py:py + h, px:px + w] = vol
    base = to_signed(torch.from_numpy(padded)[:, None])
    corners = set()
    for inp in net.inputs:
        diff = (inp != base[: len(inp)]).any(1)
        for sl in diff:
            ys, xs = np.nonzero(sl.numpy())
            if len(ys):
                corners.add((int(ys.min()) // box * box, int(xs.min()) // box * box))
    return corners, (fh, fw), padded


def test_pddpm_trains_on_detections_slices_and_boxes() -> None:
    from disyre.training import BatchSource

    vol = synthetic_cohort(1, seed=3, shape=(6, 37, 45))[0]
    seen, (fh, fw), padded = _detection_boxes(vol, 16)
    assert len(seen) >= 4  # the grid of 16 px boxes on the 40 x 48 frame, those with brain
    cfg = _config("pddpm")
    src = BatchSource([vol], cfg)
    corners = set()
    for step in range(12):
        b = src.shard(0, step, 0)
        assert b.clean.shape[-2:] == (fh, fw)  # whole slices, padded as detection pads them
        for clean, region in zip(b.clean[:, 0].numpy(), b.region[:, 0].numpy(), strict=True):
            assert any(np.array_equal(clean, s) for s in padded)
            ys, xs = np.nonzero(region)
            corner = (int(ys.min()), int(xs.min()))
            assert region.sum() == 16 * 16 or (ys.max() + 1 == fh or xs.max() + 1 == fw)
            corners.add(corner)
    assert corners <= seen  # every training box is a box detection noises on that frame
    assert len(corners) >= 3
    # the switch restores the old geometry: patches, a box among the patch's quadrants
    old = BatchSource([vol], _config("pddpm", "sampler.whole_slices=false")).shard(0, 1, 0)
    assert old.clean.shape[-2:] == (32, 32)
