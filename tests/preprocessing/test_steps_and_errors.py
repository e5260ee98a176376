"""N4, other contrasts (through their T1 or alone), and every refusal of the stage."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from disyre.data.nifti import InputError
from disyre.demo.raw_head import make_raw_head, random_transform
from disyre.preprocessing import steps
from disyre.preprocessing.pipeline import preprocess_scan
from disyre.preprocessing.recipe import PreprocessConfig, PreprocessError
from disyre.preprocessing.template import load_template

VOXEL_MM = 3.0


def _save(head, path):
    nib.save(head.nifti(), str(path))
    return path


def test_n4_recovers_a_planted_bias_field():
    """N4 on the same head with and without a +-30 % field: the ratio of the two estimated
    fields is the planted one (the template itself has smooth intensity trends N4 also sees)."""
    kw = {"seed": 4, "voxel_mm": 4.0, "shape": (60, 60, 60)}
    biased, flat = make_raw_head(bias=0.3, **kw), make_raw_head(bias=0.0, **kw)
    logs = []
    for h in (biased, flat):
        img = steps.to_ants(h.image, h.affine)
        corrected = steps.n4(img, steps.head_mask(img)).numpy()
        logs.append(np.log(h.image[h.brain] / np.maximum(corrected[h.brain], 1e-6)))
    est = logs[0] - logs[1]
    true = np.log(biased.bias[biased.brain])
    r = np.corrcoef(est, true)[0, 1]
    assert r > 0.95, f"correlation with the planted field {r:.3f}"
    # and the bias-corrected brain is flatter than the raw one
    assert np.std(est - true) < 0.3 * np.std(true - true.mean())


def test_t2_goes_through_its_t1(t1_head, tmp_path):
    """A T2 of the same subject (moved between scans, another grid): registered rigidly onto
    its T1, whose mask and template transform it reuses."""
    t1, t1_path = t1_head
    motion = random_transform(np.random.default_rng(7), "rigid", max_deg=5, max_shift_mm=6)
    t2 = make_raw_head(seed=2, contrast="t2", voxel_mm=VOXEL_MM, shape=(76, 80, 72),
                       axes="LAS", to_template=t1.to_template @ motion)
    t2_path = _save(t2, tmp_path / "t2.nii.gz")
    cfg = PreprocessConfig(spacing=VOXEL_MM, n4=False)
    tpl = load_template("mni152", VOXEL_MM)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "without its T1" warning
        pre = preprocess_scan(t2_path, cfg, tpl, tmp_path / "work", t1=t1_path, contrast="t2")
    d_native = steps.dice(pre.native_mask, t2.brain)
    assert d_native >= 0.9, f"T2 native-mask Dice {d_native:.3f}"
    assert pre.dice >= 0.9, f"T2 template-grid Dice {pre.dice:.3f}"
    assert len(pre.transform.forward) == 2 and "to_t1_" in pre.transform.forward[-1]
    assert pre.t1 is not None and pre.t1.dice >= 0.9


def test_contrast_without_t1_warns(t1_head, tmp_path, monkeypatch):
    """Without a T1, the contrast is skull-stripped itself, with a warning that says so (the
    mask here is the true one: deepbet's figure on T2 is measured in the slow test below)."""
    t2 = make_raw_head(seed=3, contrast="t2", voxel_mm=VOXEL_MM, shape=(80, 80, 80))
    path = _save(t2, tmp_path / "t2.nii.gz")
    calls = []

    def fake_strip(arr, affine, **kw):
        calls.append(arr.shape)
        return t2.brain

    monkeypatch.setattr(steps, "skull_strip", fake_strip)
    cfg = PreprocessConfig(spacing=VOXEL_MM, n4=False)
    with pytest.warns(UserWarning, match=r"t2\.nii\.gz: skull stripping a T2 scan without"):
        pre = preprocess_scan(path, cfg, load_template("mni152", VOXEL_MM), tmp_path / "w",
                              contrast="t2")
    assert calls == [t2.image.shape] and pre.warnings and pre.dice >= 0.9


@pytest.mark.slow
def test_deepbet_on_t2_alone_measured(tmp_path):
    """deepbet on a T2 head (no T1): the figure quoted in docs/preprocessing.md."""
    t2 = make_raw_head(seed=3, contrast="t2", voxel_mm=1.5, shape=(170, 170, 170))
    mask = steps.skull_strip(t2.image, t2.affine)
    d = steps.dice(mask, t2.brain)
    print(f"deepbet on the synthetic T2 head: Dice {d:.3f}")
    assert d >= 0.8


def test_4d_input_is_refused(tmp_path):
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10, 4), np.float32), np.eye(4)), str(path))
    with pytest.raises(InputError, match=r"bold\.nii\.gz: 4D image with 4 frames"):
        preprocess_scan(path, PreprocessConfig(), load_template("mni152", VOXEL_MM), tmp_path)


def test_template_with_skull_is_refused(t1_head, tmp_path, capsys):
    _, head_path = t1_head
    with pytest.raises(InputError, match=r"head\.nii\.gz: template is not skull-stripped "
                                         r"\(non-zero volume \d+ mL"):
        load_template(head_path)
    from disyre.cli import main

    assert main(["preprocess", "-i", str(head_path), "-o", str(tmp_path / "o"),
                 "--template", str(head_path), "--no-progress"]) == 1
    assert "template is not skull-stripped" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before any work


def test_no_brain_found(t1_head, tmp_path):
    """A head declared skull-stripped: its non-zero voxels are no brain (volume check)."""
    _, head_path = t1_head
    cfg = PreprocessConfig(spacing=VOXEL_MM, n4=False, skull_strip=False)
    with pytest.raises(PreprocessError, match=r"head\.nii\.gz: no brain found \(the non-zero "
                                              r"voxels .* make a mask of \d+ mL, outside"):
        preprocess_scan(head_path, cfg, load_template("mni152", VOXEL_MM), tmp_path)


@pytest.mark.slow
def test_no_brain_found_by_deepbet_in_noise(tmp_path):
    """Pure noise: deepbet's mask is no brain (covered in CI by test_no_brain_found)."""
    path = tmp_path / "noise.nii.gz"
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.rayleigh(10, (80, 80, 80)).astype(np.float32),
                             np.diag([3.0, 3, 3, 1])), str(path))
    with pytest.raises(PreprocessError, match=r"noise\.nii\.gz: no brain found"):
        preprocess_scan(path, PreprocessConfig(spacing=VOXEL_MM, n4=False),
                        load_template("mni152", VOXEL_MM), tmp_path / "w")


def test_misregistration_is_refused_with_its_figure(tmp_path):
    """A brain 1.35x smaller than the template's, registered rigidly (no scaling): its mask
    cannot overlap the template's; the subject is refused with the Dice it reached."""
    shrink = np.diag([1.35, 1.35, 1.35, 1.0])  # subject mm -> template mm
    h = make_raw_head(seed=5, voxel_mm=VOXEL_MM, shape=(64, 64, 64), to_template=shrink,
                      noise=0.0)
    h.image = np.where(h.brain, h.image, 0)  # a skull-stripped scan
    path = _save(h, tmp_path / "small.nii.gz")
    cfg = PreprocessConfig(spacing=VOXEL_MM, n4=False, skull_strip=False,
                           registration="rigid")
    with pytest.raises(PreprocessError, match=r"small\.nii\.gz: registration to the template "
                                              r"failed its check \(brain-mask Dice with the "
                                              r"template's brain 0\.\d+ < 0\.8\)"):
        preprocess_scan(path, cfg, load_template("mni152", VOXEL_MM), tmp_path / "w")
    # the same brain with an affine registration passes (the check is not just strict)
    cfg.registration = "affine"
    pre = preprocess_scan(path, cfg, load_template("mni152", VOXEL_MM), tmp_path / "w2")
    assert pre.dice >= 0.9
