"""Behaviour of the synthetic corruptions (dag, fpi, bias), the Gaussian baseline and helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from disyre.config import CorruptionConfig
from disyre.corruption import (
    AugmentRecipe,
    Corruption,
    augment,
    augment_pair,
    fit_codebook,
    schedule,
)
from disyre.corruption.bias import AUTHORS_CODEBOOK, bias_field, quantise
from disyre.corruption.dag import SyntheticAnomaly
from disyre.corruption.gaussian import GaussianNoise
from disyre.corruption.shapes import gaussian_blur, random_shapes, sample_centres
from disyre.corruption.texture import PatchBank, donor_index
from disyre.methods import make_corruption

SYNTHETIC = ("dag", "fpi", "bias")


def brains(b: int = 16, size: int = 96, seed: int = 0) -> torch.Tensor:
    """Patches with an elliptical 'brain' of varied texture and a zero background."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = (size - 1) / 2
    inside = ((yy - c) / (0.42 * size)) ** 2 + ((xx - c) / (0.34 * size)) ** 2 < 1
    smooth = torch.rand(b, 1, size // 8, size // 8, generator=g)
    smooth = torch.nn.functional.interpolate(smooth, size=(size, size), mode="bilinear")
    x = 0.15 + 0.8 * smooth + 0.03 * torch.rand(b, 1, size, size, generator=g)
    return (x.clamp(0.05, 1.0) * inside).float()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_zero_alpha_leaves_image_unchanged(name: str) -> None:
    x = brains(8)
    res = SyntheticAnomaly(name)(x, gen(), alpha=0.0)
    assert torch.equal(res.corrupted, x)
    assert torch.equal(res.clean, x)
    assert (res.severity == 0).all()
    assert (res.level == 0).all()


@pytest.mark.parametrize("name", SYNTHETIC)
def test_anomaly_inside_brain_and_window(name: str) -> None:
    x = brains(24)
    res = SyntheticAnomaly(name)(x, gen(1))
    top, left = res.params["top"], res.params["left"]
    changed = res.corrupted != x
    assert changed.any()
    inwin = torch.zeros_like(x, dtype=torch.bool)
    for i in range(x.shape[0]):
        t, l_ = int(top[i]), int(left[i])
        inwin[i, 0, t:t + 64, l_:l_ + 64] = True
        assert x[i, 0, t + 32, l_ + 32] > 0, "window not centred on a brain pixel"
    brain = x > 0
    assert not (changed & ~brain).any()
    assert not (changed & ~inwin).any()
    assert ((res.mask == 0) | (brain & inwin)).all()
    assert (res.corrupted[~brain] == 0).all()
    assert res.corrupted.min() >= 0 and res.corrupted.max() <= 1
    assert res.mask.min() >= 0 and res.mask.max() <= 1


@pytest.mark.parametrize("name", SYNTHETIC)
def test_severity_and_level_follow_schedule(name: str) -> None:
    x = brains(32)
    res = SyntheticAnomaly(name)(x, gen(2))
    table = schedule.SEVERITIES
    nearest = (res.severity[:, None] - table[None]).abs().argmin(1)
    assert torch.equal(res.level, nearest)
    change = (res.corrupted - x).abs().flatten(1).amax(1)
    a_tex, a_bias = res.params["a_tex"], res.params["a_bias"]
    if name == "fpi":
        assert torch.allclose(res.severity, a_tex)
    elif name == "bias":
        assert torch.allclose(res.severity, change, atol=1e-6)
        assert (change <= a_bias + 1e-6).all()
    else:
        assert (res.severity >= a_tex).all()
        assert (res.severity <= torch.maximum(a_tex, a_bias) + 1e-6).all()
        assert (res.severity > a_tex).any()  # the bias sometimes dominates
    # larger severity -> larger level
    order = res.severity.argsort()
    assert (res.level[order].diff() >= 0).all()


@pytest.mark.parametrize("name", SYNTHETIC)
def test_empty_patch_is_left_alone_with_severity_zero(name: str) -> None:
    x = brains(4)
    x[1] = 0
    res = SyntheticAnomaly(name)(x, gen(22), alpha=0.8)
    assert torch.equal(res.corrupted[1], x[1]) and res.severity[1] == 0 and res.level[1] == 0
    assert (res.severity[[0, 2, 3]] >= (0.8 if name != "bias" else 0.0)).all()
    assert (res.mask[1] == 0).all()


def test_fpi_level_distribution_matches_uniform_severity() -> None:
    """a_tex ~ U(0, 1): P(level k) is the width of k's nearest-severity bin within [0, 1]."""
    corr = SyntheticAnomaly("fpi", bank_size=0, edge_blur_p=0.0)
    x = brains(500, size=64)
    g = gen(3)
    levels = torch.cat([corr(x, g).level for _ in range(6)])
    n = levels.numel()
    s = schedule.SEVERITIES.double()
    edges = torch.cat([torch.zeros(1), (s[1:] + s[:-1]) / 2, torch.ones(1)])
    expected_cdf = edges[1:].clamp(0, 1).numpy()
    counts = np.bincount(levels.numpy(), minlength=schedule.T)
    empirical_cdf = np.cumsum(counts) / n
    # Kolmogorov-Smirnov bound at the 0.1 % level
    assert np.abs(empirical_cdf - expected_cdf).max() < 1.95 / math.sqrt(n)


def test_same_seed_same_batch_and_different_seed_differs() -> None:
    x = brains(8)
    for name in (*SYNTHETIC, "gaussian"):
        corr = make_corruption(CorruptionConfig(name=name))
        a = corr(x, gen(5))
        b = make_corruption(CorruptionConfig(name=name))(x, gen(5))
        c = make_corruption(CorruptionConfig(name=name))(x, gen(6))
        assert torch.equal(a.corrupted, b.corrupted) and torch.equal(a.level, b.level)
        assert not torch.equal(a.corrupted, c.corrupted)


def test_dag_texture_takes_target_range_and_fpi_does_not() -> None:
    x = brains(16)
    # a dark target region and bright donors make the difference visible
    x[:8] = x[:8] * 0.3
    kw = dict(bank_size=0, edge_blur_p=0.0)
    res = SyntheticAnomaly("dag", **kw)(x, gen(7), alpha=1.0, alpha_bias=0.0)
    fpi = SyntheticAnomaly("fpi", **kw)(x, gen(7), alpha=1.0)
    outside = 0
    for i in range(16):
        inside = res.mask[i] > 0
        assert inside.sum() > 0
        lo, hi = x[i][inside].min(), x[i][inside].max()
        got = res.corrupted[i][inside]
        assert torch.allclose(got.min(), lo, atol=1e-5)
        assert torch.allclose(got.max(), hi, atol=1e-5)
        f_in = fpi.corrupted[i][fpi.mask[i] > 0]
        xf = x[i][fpi.mask[i] > 0]
        outside += int((f_in > xf.max() + 1e-3).any() or (f_in < xf.min() - 1e-3).any())
    assert outside >= 4  # plain FPI keeps the donor's intensities


def test_quantise_picks_nearest_level() -> None:
    cb = torch.tensor(AUTHORS_CODEBOOK)
    x = torch.rand(4, 1, 32, 32, generator=gen(21))
    nearest = (x[..., None] - cb).abs().argmin(-1)
    assert torch.equal(quantise(x, cb), nearest)


def test_bias_changes_only_picked_levels_near_the_mask() -> None:
    cb = torch.tensor(AUTHORS_CODEBOOK)
    x = torch.full((4, 1, 64, 64), 0.38)
    x[..., 32:] = 0.77
    m = torch.zeros_like(x)
    m[..., 10:50, 4:24] = 1.0  # only pixels of level 1 under the mask
    b = bias_field(x, m, cb, gen(8))
    assert (b[..., 12:48, 6:22] > 0.9).all()  # the only covered level is always picked
    assert (b[..., 28:] == 0).all()  # blur sigma 1 reaches 3 px at most
    assert (b[..., :6, :] == 0).all()


@pytest.mark.parametrize("name", SYNTHETIC)
def test_patch_bank_supplies_texture_after_first_batch(name: str) -> None:
    corr = SyntheticAnomaly(name, bank_size=32)
    x = brains(8)
    corr(x, gen(9))
    if corr.texture:
        assert len(corr.bank) == 8
        for _ in range(4):
            corr(x, gen(10))
        assert len(corr.bank) == 32


def test_patch_bank_ring_buffer() -> None:
    bank = PatchBank(capacity=5)
    bank.add(torch.arange(3.0).view(3, 1, 1, 1))
    bank.add(torch.arange(3.0, 7.0).view(4, 1, 1, 1))
    assert len(bank) == 5
    assert sorted(bank._data.flatten().tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    s = bank.sample(200, gen(), "cpu")
    assert set(s.flatten().tolist()) == {2.0, 3.0, 4.0, 5.0, 6.0}


def test_donor_is_never_self_and_covers_others() -> None:
    d = donor_index(6, gen(), "cpu")
    assert (d != torch.arange(6)).all()
    seen = torch.stack([donor_index(6, gen(s), "cpu") for s in range(200)])
    assert all(set(seen[:, i].tolist()) == set(range(6)) - {i} for i in range(6))


def test_legacy_shapes_are_filled_connected_and_centred() -> None:
    for fam in ("rectangle", "ellipse", "blob"):
        m = random_shapes(40, 64, gen(11), recipe="legacy", edge_blur_p=0.0, families=(fam,))
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        for i in range(40):
            lab, n = ndimage.label(m[i, 0].numpy() > 0)
            assert n == 1, f"{fam} {i} has {n} components"
            assert m[i, 0, 31:33, 31:33].all()
    soft = random_shapes(200, 64, gen(12), recipe="legacy")
    frac_soft = ((soft > 0) & (soft < 1)).flatten(1).any(1).float().mean()
    assert 0.55 < frac_soft < 0.85  # edges softened with p = 0.7
    with pytest.raises(ValueError, match="families"):
        random_shapes(2, 64, gen(), families=("blob",))  # a legacy family name
    with pytest.raises(ValueError, match="recipe"):
        random_shapes(2, 64, gen(), recipe="nope")


def test_authors_shapes_are_filled_and_connected() -> None:
    for fam in ("rectangle", "disc", "organic"):
        m = random_shapes(60, 64, gen(11), edge_blur_p=0.0, families=(fam,))
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        for i in range(60):
            mask = m[i, 0].numpy() > 0
            lab, n = ndimage.label(mask)
            assert n == 1, f"{fam} {i} has {n} components"
            assert (ndimage.binary_fill_holes(mask) == mask).all(), f"{fam} {i} has holes"
    # sizes scale with the window: a 32 px window holds shapes of a quarter of the area
    big = random_shapes(400, 64, gen(13), families=("disc",))
    small = random_shapes(400, 32, gen(13), families=("disc",))
    ratio = float((small > 0.5).sum()) / float((big > 0.5).sum())
    assert 0.2 < ratio < 0.3


@pytest.mark.parametrize("recipe", ["authors", "legacy"])
def test_rectangles_rotated_half_the_time_by_at_most_15_degrees(recipe: str) -> None:
    m = random_shapes(400, 64, gen(23), recipe=recipe, edge_blur_p=0.0,
                      families=("rectangle",))[:, 0] > 0
    rows, cols = m.any(2), m.any(1)
    bbox_area = rows.sum(1) * cols.sum(1)
    aligned = m.sum((1, 2)) == bbox_area  # an unrotated rectangle fills its bounding box
    assert 0.42 < aligned.float().mean() < 0.58
    # rotated ones: the principal axis of an elongated rectangle is tilted by its rotation
    checked = 0
    for i in torch.nonzero(~aligned).flatten()[:40].tolist():
        ys, xs = torch.nonzero(m[i], as_tuple=True)
        yc, xc = ys.float().mean(), xs.float().mean()
        cov = torch.cov(torch.stack([xs.float() - xc, ys.float() - yc]))
        evals, evecs = torch.linalg.eigh(cov)
        if evals[1] < 1.3 * evals[0]:
            continue  # nearly square: principal axis undefined
        if m[i, 0].any() or m[i, -1].any() or m[i, :, 0].any() or m[i, :, -1].any():
            continue  # clipped by the window (authors: rotation about the window centre)
        v = evecs[:, 1]
        tilt = math.degrees(math.atan2(abs(v[1]), abs(v[0])))
        tilt = min(tilt, 90 - tilt)
        assert tilt <= 16.5
        checked += 1
    assert checked >= 10


def test_window_centres_are_brain_pixels_where_window_fits() -> None:
    brain = torch.zeros(50, 1, 100, 100, dtype=torch.bool)
    brain[:, :, 60:, 20:40] = True  # centres must fit: rows/cols in [32, 68]
    top, left = sample_centres(brain, 64, gen(13))
    assert (brain[torch.arange(50), 0, top + 32, left + 32]).all()
    assert (top + 32).unique().numel() > 3 and (left + 32).unique().numel() > 3
    assert (top <= 36).all() and (left <= 36).all()
    assert ((left + 32) >= 32).all() and ((top + 32) >= 60).all()


def test_gaussian_blur_matches_scipy_on_both_paths() -> None:
    x = torch.rand(3, 1, 64, 64, generator=gen(14))
    sig = torch.tensor([0.7, 2.0, 4.5])
    for max_sigma in (4.5, 5.0):
        y = gaussian_blur(x, sig, max_sigma=max_sigma)
        for i in range(3):
            radius = math.ceil(3 * max_sigma)
            ref = ndimage.gaussian_filter(x[i, 0].double().numpy(), float(sig[i]),
                                          mode="constant", truncate=radius / float(sig[i]))
            assert np.abs(y[i, 0].numpy() - ref).max() < 1e-5
    small = gaussian_blur(x, torch.tensor([1.0, 1.0, 1.0]))
    ref = ndimage.gaussian_filter(x[0, 0].double().numpy(), 1.0, mode="constant", truncate=3)
    assert np.abs(small[0, 0].numpy() - ref).max() < 1e-5


def test_gaussian_variant_follows_ddpm_forward() -> None:
    x = brains(4, size=64)
    corr = GaussianNoise()
    res = corr(x, gen(15))
    assert torch.equal(res.severity, schedule.severity_of(res.level))
    eps = torch.randn(x.shape, generator=gen(16))
    lv = torch.tensor([0, 30, 60, 99])
    noisy = corr.inference_input(x, lv, gen(16))
    a = schedule.severity_of(lv)[:, None, None, None]
    assert torch.allclose(noisy, torch.sqrt(1 - a * a) * x + a * eps, atol=1e-6)
    levels = torch.cat([corr(x, gen(s)).level for s in range(400)])
    assert levels.min() <= 3 and levels.max() >= 96
    assert abs(levels.float().mean().item() - 49.5) < 4
    with pytest.raises(ValueError):
        corr.inference_input(x, 10, None)


def test_synthetic_inference_input_is_identity_and_protocol() -> None:
    x = brains(2)
    for name in (*SYNTHETIC, "gaussian"):
        corr = make_corruption(CorruptionConfig(name=name))
        assert isinstance(corr, Corruption) and corr.name == name
    corr = make_corruption(CorruptionConfig(name="dag"))
    assert corr.inference_input(x, 40) is x
    stateless = make_corruption(CorruptionConfig(name="fpi"), bank_size=0)
    a, b = stateless(x, gen(3)), stateless(x, gen(3))
    assert torch.equal(a.corrupted, b.corrupted)  # no state carried between calls
    with pytest.raises(ValueError, match="unknown method 'noise'; choose from dag, "):
        make_corruption(CorruptionConfig(name="noise"))


def test_codebook_fit_recovers_centres_and_falls_back() -> None:
    rng = np.random.default_rng(0)
    centres = [0.1, 0.3, 0.5, 0.7, 0.9]
    vols = [np.where(rng.random((10, 30, 30)) < 0.2, 0.0,
                     rng.choice(centres, (10, 30, 30)) + rng.normal(0, 0.02, (10, 30, 30)))
            for _ in range(2)]
    cb = fit_codebook(vols, k=5, seed=0)
    assert np.allclose(cb, centres, atol=0.01)
    assert fit_codebook([np.zeros((4, 4, 4))]) == list(AUTHORS_CODEBOOK)
    corr = make_corruption(CorruptionConfig(), codebook=cb)
    assert torch.allclose(corr.codebook, torch.tensor(cb))


def test_legacy_augment_keeps_background_range_and_is_seeded() -> None:
    x = brains(64, size=64)
    kw = dict(recipe="legacy")
    assert torch.equal(augment(x, gen(17), p_spatial=0.0, p_mirror=0.0, p_intensity=0.0,
                               **kw), x)
    flipped = augment(x, gen(17), p_spatial=0.0, p_mirror=1.0, p_intensity=0.0, **kw)
    assert torch.equal(flipped, x.flip(-1))
    inten = augment(x, gen(18), p_spatial=0.0, p_mirror=0.0, p_intensity=1.0, **kw)
    assert (inten[x == 0] == 0).all()  # background stays 0 despite noise and blur
    assert ((inten >= 0) & (inten <= 1)).all()
    assert not torch.equal(inten, x)
    spatial = augment(x, gen(19), p_spatial=1.0, p_mirror=0.0, p_intensity=0.0, **kw)
    assert ((spatial >= 0) & (spatial <= 1)).all()
    moved = (spatial > 0) != (x > 0)
    assert moved.flatten(1).any(1).float().mean() > 0.9  # every sample deformed
    area = (spatial > 0).flatten(1).sum(1) / (x > 0).flatten(1).sum(1)
    assert ((area > 0.5) & (area < 1.9)).all()  # scaling 0.75-1.25 plus a mild deformation
    z = augment(x, gen(20), **kw)
    assert torch.equal(z, augment(x, gen(20), **kw))
    assert ((z >= 0) & (z <= 1)).all()
    with pytest.raises(TypeError, match="legacy"):
        augment(x, gen(20), p_spatial=0.0)  # an option of the legacy recipe only


def test_authors_augment_keeps_background_range_and_is_seeded() -> None:
    x = brains(64, size=64)
    off = AugmentRecipe(p_elastic=0, p_rotation=0, p_scale=0, p_mirror=0, p_brightness=0,
                        p_gamma=0, p_inverted_gamma=0, p_noise=0, p_blur=0)
    assert torch.equal(augment(x, gen(17), recipe=off), x)
    everything = AugmentRecipe(p_elastic=1, p_rotation=1, p_scale=1, p_brightness=1,
                               p_gamma=1, p_inverted_gamma=1, p_noise=1, p_blur=1)
    y = augment(x, gen(18), recipe=everything)
    assert ((y >= 0) & (y <= 1)).all() and not torch.equal(y, x)
    moved = (y > 0) != (x > 0)
    assert moved.flatten(1).any(1).float().mean() > 0.9
    z = augment(x, gen(20))
    assert torch.equal(z, augment(x, gen(20))) and ((z >= 0) & (z <= 1)).all()
    with pytest.raises(ValueError, match="recipe"):
        augment(x, gen(), recipe="nope")


def test_augment_carries_the_brain_mask() -> None:
    """A brain mask that includes zero-valued brain pixels: noise lands on them, the mask
    follows the spatial transforms and flips, and the background stays 0."""
    x = brains(200, size=64)
    brain = x > 0
    x = torch.where(torch.arange(64)[None, None, None] < 32, 0.0, x)  # dark half of the brain
    noisy = AugmentRecipe(p_elastic=0.5, p_rotation=0.5, p_scale=0.5, p_noise=1.0,
                          p_gamma=0, p_inverted_gamma=0, p_brightness=0, p_blur=0)
    y, b = augment_pair(x, brain, gen(30), recipe=noisy)
    assert b.dtype == torch.bool and (y[~b] == 0).all()
    assert (y[b] > 0).float().mean() > 0.4  # the zero-valued brain got noise too
    assert not torch.equal(b, brain)  # the mask moved with the patches
    inside = b.flatten(1).sum(1).float() / brain.flatten(1).sum(1).float()
    assert ((inside > 0.5) & (inside < 1.9)).all()
    # the same draws without a mask: brain = non-zero pixels after the spatial transforms
    y0, b0 = augment_pair(x, None, gen(30), recipe=noisy)
    assert (y0[b] == 0).float().mean() > 0.3  # the dark half is background there


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", (*SYNTHETIC, "gaussian"))
def test_cuda_matches_contract(name: str) -> None:
    x = brains(8).cuda()
    corr = make_corruption(CorruptionConfig(name=name))
    for g in (torch.Generator(device="cuda").manual_seed(0), gen(0)):
        res = corr(x, g)
        assert res.corrupted.device.type == "cuda" and res.level.device.type == "cuda"
        assert torch.equal(res.level, schedule.level_of(res.severity))
        if name != "gaussian":
            assert (res.corrupted[x == 0] == 0).all()
            assert res.corrupted.min() >= 0 and res.corrupted.max() <= 1
    y = augment(x, torch.Generator(device="cuda").manual_seed(1))
    assert (y >= 0).all() and (y <= 1).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("legacy", [False, True])
def test_cuda_with_a_cpu_generator_matches_cpu(legacy: bool) -> None:
    """Shapes, bias, corruption and augmentation (with the brain mask) of both recipes: a CPU
    generator gives the same draws on CUDA data as on CPU data."""
    x = brains(8)
    brain = x > 0
    shapes, sel, aug = ("legacy", "single", "legacy") if legacy else ("authors",) * 3
    a = random_shapes(32, 64, gen(1), "cpu", recipe=shapes)
    b = random_shapes(32, 64, gen(1), "cuda", recipe=shapes)
    assert (a - b.cpu()).abs().max() < 1e-4
    corr = make_corruption(CorruptionConfig(shapes=shapes, bias_selection=sel), bank_size=0)
    rc = corr(x, gen(2), brain=brain)
    rg = corr(x.cuda(), gen(2), brain=brain.cuda())
    assert rg.corrupted.is_cuda and (rc.corrupted - rg.corrupted.cpu()).abs().max() < 1e-3
    yc, bc = augment_pair(x, brain, gen(3), recipe=aug)
    yg, bg = augment_pair(x.cuda(), brain.cuda(), gen(3), recipe=aug)
    assert (yc - yg.cpu()).abs().max() < 2e-2 and (bc != bg.cpu()).float().mean() < 1e-3
