"""The authors' recipe, checked as distributions: shape sizes and edge blur, bias level
selection, augmentation, the v1 walk's levels (docs/method.md#corrections-and-differences).

Figures of the authors' code quoted here were measured from it (2,000 draws, 64 px window).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from disyre.corruption import augment
from disyre.corruption.bias import AUTHORS_CODEBOOK, bias_field
from disyre.corruption.dag import SyntheticAnomaly
from disyre.corruption.shapes import random_shapes

#: the authors' shape areas (px of the blurred mask > 0.5): p25, p50, p75
AUTHORS_AREAS = {"rectangle": (368, 580, 939), "disc": (250, 516, 880),
                 "organic": (1514, 2306, 3048), "all": (440, 880, 1676)}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _areas(m: torch.Tensor) -> np.ndarray:
    return (m > 0.5).flatten(1).sum(1).numpy()


def _close(got: np.ndarray, want: tuple[int, ...], tol: float = 0.2) -> bool:
    return all(abs(g - w) <= tol * w for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("family", ["rectangle", "disc", "organic"])
def test_shape_area_quartiles_match_the_authors(family: str) -> None:
    """2,000 draws of one family: p25 / p50 / p75 of the area within +-20 % of the authors'."""
    m = random_shapes(2000, 64, gen(1), families=(family,))
    q = np.percentile(_areas(m), [25, 50, 75])
    assert _close(q, AUTHORS_AREAS[family]), (family, q)


def test_all_shapes_in_a_128_px_brain_patch_match_the_authors() -> None:
    """The anomaly mask of the corruption itself (64 px window in a 128 px all-brain patch):
    area quartiles of all families together within +-20 % of the authors' 440 / 880 / 1,676
    px (this project's earlier shapes: 304 / 520 / 869)."""
    corr = SyntheticAnomaly("fpi", bank_size=0)
    x = torch.full((500, 1, 128, 128), 0.5)
    g = gen(2)
    areas = np.concatenate([_areas(corr(x, g).mask) for _ in range(4)])
    q = np.percentile(areas, [25, 50, 75])
    assert _close(q, AUTHORS_AREAS["all"]), q


def test_organic_shapes_often_fill_the_window_to_its_edge() -> None:
    m = random_shapes(2000, 64, gen(3), families=("organic",))[:, 0] > 0.5
    edge = m[:, 0].any(1) | m[:, -1].any(1) | m[:, :, 0].any(1) | m[:, :, -1].any(1)
    assert 0.6 < float(edge.float().mean()) < 0.8  # the authors': 70 %


def test_rectangles_and_discs_sit_at_random_offsets() -> None:
    """Sides 10-44 px (even, 2 * (s // 2)), anywhere in the window, not always centred."""
    m = random_shapes(1000, 64, gen(4), edge_blur_p=0.0, families=("rectangle",))[:, 0] > 0
    rows, cols = m.any(2), m.any(1)
    aligned = m.sum((1, 2)) == rows.sum(1) * cols.sum(1)  # unrotated: fills its box
    h, w = rows.sum(1)[aligned], cols.sum(1)[aligned]
    assert h.min() >= 10 and h.max() <= 44 and w.min() >= 10 and w.max() <= 44
    assert (h % 2 == 0).all() and (w % 2 == 0).all()
    assert 0.4 < float(aligned.float().mean()) < 0.6  # rotated half of the time
    centre_r = (rows.float() * torch.arange(64)).sum(1) / rows.sum(1)
    assert centre_r.std() > 6  # centred shapes would give 0
    d = random_shapes(1000, 64, gen(5), edge_blur_p=0.0, families=("disc",))[:, 0] > 0
    drows = d.any(2)
    first = drows.float().argmax(1)
    last = 63 - drows.flip(1).float().argmax(1)
    assert first.min() >= 9 and last.max() <= 54  # 10 px margin (on the authors' 64/63 grid)
    assert ((first + last) / 2).std() > 3


def test_edge_blur_is_an_integer_sigma_in_56_percent_of_draws() -> None:
    m = random_shapes(4000, 64, gen(6))
    soft = ((m > 1e-3) & (m < 1 - 1e-3)).flatten(1).any(1)
    # 0.7 (blur) x 4/5 (sigma >= 1): 0.56; binomial sd over 4,000 draws is 0.008
    assert abs(float(soft.float().mean()) - 0.56) < 0.03
    _, info = random_shapes(4000, 64, gen(6), with_info=True)
    sigma = info["edge_sigma"]
    assert set(sigma.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    assert torch.equal(soft, sigma > 0)
    counts = torch.bincount(sigma[sigma > 0].long(), minlength=5)[1:].float()
    assert (counts / counts.sum() - 0.25).abs().max() < 0.04


def _whole_shape_fraction(sizes: np.ndarray, covered: np.ndarray, lo: int, hi: int
                          ) -> float:
    sel = (sizes >= lo) & (sizes < hi)
    return float(covered[sel].mean())


def test_bias_covers_the_whole_shape_about_half_the_time() -> None:
    """On a 4-tissue patch, each level is picked with probability count / (total + 1000) and
    all of them when none is: the bias covers the whole shape in about half the draws of
    400-3,000 px shapes, more for small shapes, less for large ones (the authors' code: 0.50,
    0.73 below 400 px, 0.37-0.40 above 2,000 px; this project's earlier selection 2-5 %)."""
    cb = torch.tensor(AUTHORS_CODEBOOK)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    tissue = ((yy // 4) % 2) * 2 + ((xx // 4) % 2)  # 4 tissues in 4 px blocks
    x = cb[1:][tissue].expand(4000, 1, 64, 64).contiguous()
    m = random_shapes(4000, 64, gen(7))
    b = bias_field(x, m, cb, gen(8))
    inside = m > 0.5
    ratio = torch.where(inside, b / m.clamp_min(1e-6), torch.ones_like(m))
    covered = (ratio > 0.5).flatten(1).float().mean(1).numpy() > 0.99
    sizes = inside.flatten(1).sum(1).numpy()
    mid = _whole_shape_fraction(sizes, covered, 400, 3000)
    small = _whole_shape_fraction(sizes, covered, 1, 400)
    large = _whole_shape_fraction(sizes, covered, 2000, 4097)
    assert 0.43 < mid < 0.57, mid
    assert 0.62 < small < 0.84, small
    assert 0.30 < large < 0.48, large


def test_bias_levels_come_from_the_texture_blended_window() -> None:
    """The authors quantise x1 (after the foreign texture), not the clean window: with a full
    texture swap, the biased pixels follow the donor's tissue layout."""
    yy, xx = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    lo, hi = AUTHORS_CODEBOOK[1], AUTHORS_CODEBOOK[4]
    cols = torch.where((xx // 8) % 2 == 0, lo, hi)  # tissue in column bands
    rows = torch.where((yy // 8) % 2 == 0, lo, hi)  # tissue in row bands
    x = torch.stack([cols, rows]).unsqueeze(1)  # each image is the other's texture donor
    corr = SyntheticAnomaly("dag", bank_size=0, edge_blur_p=0.0)
    checked = 0
    for seed in range(80):
        res = corr(x, gen(10 + seed), alpha=1.0, alpha_bias=0.6)
        for i in range(2):
            t, left = int(res.params["top"][i]), int(res.params["left"][i])
            win = (slice(t, t + 64), slice(left, left + 64))
            shape = res.mask[i, 0][win] > 0.99
            # 2 px inside the shape: the blurred level mask also sees the clean window outside
            outside = (~shape).float()[None, None]
            shape &= torch.nn.functional.max_pool2d(outside, 5, 1, 2)[0, 0] == 0
            # with a_tex = 1 and a hard shape, x1 is the donor (rescaled to the same range)
            donor_rows = i == 0  # image 0 has column bands, its donor row bands
            dt, dl = int(res.params["donor_top"][i]), int(res.params["donor_left"][i])
            dwin = (slice(dt, dt + 64), slice(dl, dl + 64))
            level = (rows if donor_rows else cols)[dwin]
            other = (cols if donor_rows else rows)[win]
            changed = (res.corrupted[i, 0][win] - level).abs() > 0.05
            # pixels 2 px away from any tissue boundary of either layout
            ar = torch.arange(64)
            pos_r = (ar + (dt if donor_rows else t)) % 8
            pos_c = (ar + (left if donor_rows else dl)) % 8
            far_r, far_c = (pos_r >= 2) & (pos_r <= 5), (pos_c >= 2) & (pos_c <= 5)
            core = shape & far_r[:, None] & far_c[None, :]
            ch = changed[core]
            if core.sum() < 50 or ch.all() or not ch.any():
                continue  # whole shape or nothing biased: says nothing about the levels
            lv, ot = level[core], other[core]
            # one donor level is biased, the other not; the clean levels are mixed
            assert ch.eq(lv == lv[ch][0]).all()
            assert not ch.eq(ot == ot[ch][0]).all()
            checked += 1
    assert checked >= 10


def test_gaussian_noise_std_is_at_most_0_05_in_15_percent_of_patches() -> None:
    """The default augmentation on a constant brain patch: only the noise makes the centre
    non-constant. Noise std U(0, 0.05) with p = 0.15 (this project's earlier noise had std
    sqrt(U(0, 0.05)), up to 0.22)."""
    x = torch.full((4000, 1, 64, 64), 0.5)
    y = augment(x, gen(20))
    centre = y[:, 0, 24:40, 24:40].flatten(1)
    std = centre.std(1)
    noisy = std > 1e-4
    assert abs(float(noisy.float().mean()) - 0.15) < 0.025
    assert float(std.max()) < 0.06
    # U(0, 0.05): mean 0.025 (blur, p = 0.075, lowers a few)
    assert 0.019 < float(std[noisy].mean()) < 0.027
    assert (y[:, 0, 24:40, 24:40] > 0).all()  # noise on the brain, not a hole in it


def test_flips_along_both_in_plane_axes() -> None:
    x = torch.zeros(2000, 1, 64, 64)
    x[:, :, 4:28, 4:28] = 0.9  # a bright block in one quadrant
    x[:, :, 28:60, 4:60] = 0.3
    x[:, :, 4:28, 28:60] = 0.3
    y = augment(x, gen(21))
    q = y[:, 0].reshape(2000, 2, 32, 2, 32).mean((2, 4))  # (N, 2, 2) quadrant means
    where = q.flatten(1).argmax(1)
    ud = (where // 2 == 1).float().mean()
    lr = (where % 2 == 1).float().mean()
    assert abs(float(ud) - 0.5) < 0.05 and abs(float(lr) - 0.5) < 0.05


def test_elastic_deformation_reaches_an_eighth_of_the_patch() -> None:
    """The authors' elastic field: its largest displacement is U(sigma/8, sigma/2) with
    sigma = U(0, 0.25) x patch side, so up to 16 px on a 128 px patch (mean 5 px)."""
    from disyre.corruption.augment import elastic_offsets

    d = elastic_offsets(400, 128, 128, gen(22), "cpu")
    peak = d.abs().flatten(2).amax(2)  # per sample and axis
    assert float(peak.max()) <= 16.0 + 1e-4
    assert float(peak.max()) > 12.0
    assert abs(float(peak.mean()) - 128 * 0.125 * 0.3125) < 0.6  # E = 0.125 P x 0.3125
    # the field is smooth: neighbouring displacements differ by far less than the peak
    step = (d[..., 1:] - d[..., :-1]).abs().flatten(2).amax(2)
    assert float((step / peak.clamp_min(1e-6)).median()) < 0.1


def test_gamma_draws_half_below_and_half_above_one_on_the_patch_range() -> None:
    from disyre.corruption.augment import AugmentRecipe

    only_gamma = AugmentRecipe(p_elastic=0, p_rotation=0, p_scale=0, p_mirror=0,
                               p_brightness=0, p_gamma=1.0, p_inverted_gamma=0, p_noise=0,
                               p_blur=0)
    ramp = torch.linspace(0.05, 0.8, 64).expand(2000, 1, 64, 64).contiguous()
    y = augment(ramp, gen(23), recipe=only_gamma)
    # on the patch's range [0.05, 0.8]: y = ((x - 0.05) / 0.75) ** g * 0.75 + 0.05
    assert torch.allclose(y[..., 0], ramp[..., 0], atol=1e-5)
    assert torch.allclose(y[..., -1], ramp[..., -1], atol=1e-5)
    mid = 20
    t = (ramp[0, 0, 0, mid] - 0.05) / 0.75
    g = torch.log((y[:, 0, 0, mid] - 0.05) / 0.75) / torch.log(t)
    assert abs(float((g < 1).float().mean()) - 0.5) < 0.04
    lo, hi = g[g < 1], g[g >= 1]
    assert lo.min() > 0.49 and hi.max() < 2.01
    assert abs(float(lo.mean()) - 0.75) < 0.02 and abs(float(hi.mean()) - 1.5) < 0.04


def test_v1_walk_starts_at_the_most_severe_v2_level() -> None:
    from disyre.corruption.schedule import multistep_levels, severity_of
    from disyre.methods.dag import restore_multistep

    assert multistep_levels(5) == [80, 60, 40, 20, 0]
    assert float(severity_of(80)) == pytest.approx(0.82, abs=0.01)
    seen: list[int] = []

    class Spy(torch.nn.Module):
        def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
            seen.extend(level.tolist())
            return x * 0.9

    restore_multistep(Spy(), torch.rand(2, 1, 16, 16), steps=5)
    assert sorted(set(seen), reverse=True) == [80, 60, 40, 20, 0]
    for steps in (1, 2, 3, 8, 20):
        seen.clear()
        restore_multistep(Spy(), torch.rand(1, 1, 8, 8), steps=steps)
        assert max(seen) == 80 and (steps == 1 or min(seen) == 0)
        sev = [float(severity_of(k)) for k in sorted(set(seen))]
        assert max(sev) < 0.83 and not any(math.isclose(s, 0.9995, abs_tol=0.01) for s in sev)
