"""The diffusion baselines (``anoddpm``, ``pddpm``): simplex noise, schedules, the walk, the
patched restoration, training and detection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from disyre.config import ConfigError, RunConfig, apply_overrides
from disyre.corruption.diffusion import (
    ANODDPM_TRAIN_STEPS,
    PatchedDiffusion,
    SimplexDiffusion,
    T,
    cosine_alphas_bar,
    from_signed,
    linear_alphas_bar,
    to_signed,
)
from disyre.corruption.simplex import FEATURE, OCTAVES, PERSISTENCE, simplex_octaves
from disyre.methods import get_method
from disyre.methods.anoddpm import restore_walk, walk_steps
from disyre.methods.pddpm import restore_patched
from tests.helpers import synthetic_cohort, tiny_config
from tests.helpers.cohort import planted_lesion_aps


def _corr(n: np.ndarray, lag: int) -> float:
    a, b = n[..., :-lag].ravel(), n[..., lag:].ravel()
    return float(np.corrcoef(a, b)[0, 1])


# --------------------------------------------------------------------------------------------
# simplex noise
# --------------------------------------------------------------------------------------------


def test_simplex_feature_size_sets_the_correlation_length() -> None:
    g = torch.Generator().manual_seed(0)
    for feature in (FEATURE, FEATURE / 2):
        n = simplex_octaves((64, 1, 128, 128), g, octaves=1, feature=feature).numpy()
        assert n.std() == pytest.approx(0.366, rel=0.05)  # OpenSimplex's (test_simplex.py)
        assert abs(n).max() <= 1.0 and abs(n.mean()) < 0.03
        # OpenSimplex's correlation lengths: 0.83 a quarter feature away, 0.43 half a feature
        # away, slightly negative a whole feature away (tests/corruption/test_simplex.py)
        q = round(feature / 4)
        assert 0.75 < _corr(n, q) < 0.9, (feature, _corr(n, q))
        assert 0.3 < _corr(n, 2 * q) < 0.55, (feature, _corr(n, 2 * q))
        assert _corr(n, int(feature)) < 0, (feature, _corr(n, int(feature)))
        assert _corr(n, 1) > 0.95


def test_simplex_octaves_add_with_the_published_persistence() -> None:
    g = torch.Generator().manual_seed(1)
    one = simplex_octaves((64, 1, 128, 128), g, octaves=1).numpy().std()
    full = simplex_octaves((64, 1, 128, 128), g).numpy()
    # independent octaves: variances add with amplitudes PERSISTENCE^o (0.59 for the recipe)
    expected = one * math.sqrt(sum(PERSISTENCE ** (2 * o) for o in range(OCTAVES)))
    assert full.std() == pytest.approx(expected, rel=0.05)
    # the finer octaves (down to 2 px features) make neighbouring pixels less alike
    assert _corr(full, 1) < 0.97 * _corr(simplex_octaves((64, 1, 128, 128), g,
                                                         octaves=1).numpy(), 1)
    # the same generator state gives the same noise; each sample its own
    a = simplex_octaves((2, 1, 32, 32), torch.Generator().manual_seed(3))
    b = simplex_octaves((2, 1, 32, 32), torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.allclose(a[0], a[1])


# --------------------------------------------------------------------------------------------
# schedules and forward processes
# --------------------------------------------------------------------------------------------


def test_schedules_match_their_closed_forms() -> None:
    lin = linear_alphas_bar()
    betas = np.linspace(1e-4, 0.02, T)
    np.testing.assert_allclose(lin.numpy(), np.cumprod(1 - betas), rtol=1e-12)
    assert float(lin[-1]) == pytest.approx(4.0e-5, rel=0.05)
    cos = cosine_alphas_bar()
    f = np.cos((np.arange(T + 1) / T + 0.008) / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(cos.numpy()[:900], (f[1:] / f[0])[:900], rtol=1e-9)
    assert float(cos[499]) == pytest.approx(0.5, abs=0.02)  # t_test = 500: half the signal


def test_anoddpm_noises_below_step_800_and_targets_the_noise() -> None:
    x = torch.rand(64, 1, 32, 32)
    corr = SimplexDiffusion()
    res = corr(x, torch.Generator().manual_seed(0))
    assert res.level.dtype == torch.int64 and int(res.level.max()) < ANODDPM_TRAIN_STEPS
    assert int(res.level.max()) > 600 and int(res.level.min()) < 200
    a = corr.alphas_bar[res.level].float().reshape(-1, 1, 1, 1)
    expected = a.sqrt() * to_signed(x) + (1 - a).sqrt() * res.target
    torch.testing.assert_close(res.corrupted, expected)
    assert res.target.std() == pytest.approx(0.59, rel=0.1)  # the simplex noise, unscaled


def test_pddpm_noises_one_grid_box_and_keeps_the_rest_clean() -> None:
    x = torch.rand(32, 1, 64, 64) * 0.5 + 0.25
    corr = PatchedDiffusion(box=32)
    res = corr(x, torch.Generator().manual_seed(0))
    changed = (res.corrupted - to_signed(x)).abs() > 1e-6
    for i in range(len(x)):
        y0, x0 = res.params["corner"][i].tolist()
        assert y0 in (0, 32) and x0 in (0, 32)
        box = torch.zeros(64, 64, dtype=torch.bool)
        box[y0:y0 + 32, x0:x0 + 32] = True
        assert not changed[i, 0][~box].any()
        assert changed[i, 0][box].float().mean() > 0.9
        assert torch.equal(res.mask[i, 0].bool(), box)
    assert len({tuple(c) for c in res.params["corner"].tolist()}) == 4  # all four boxes drawn
    assert int(res.level.max()) > 900 and res.target is None
    torch.testing.assert_close(corr.inference_input(x, 499), to_signed(x))


def test_walk_step_is_the_ddpm_posterior(monkeypatch: pytest.MonkeyPatch) -> None:
    corr = SimplexDiffusion()
    monkeypatch.setattr(corr, "noise", lambda like, g: torch.zeros_like(like))
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    x0, xt = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    for t in (1, 100, 249):
        # the posterior mean of adjacent steps, written from beta_t and alpha_t = 1 - beta_t
        c0 = float(betas[t] * ab[t - 1].sqrt() / (1 - ab[t]))
        ct = float((1 - betas[t]).sqrt() * (1 - ab[t - 1]) / (1 - ab[t]))
        out = corr.step(x0, xt, t, t - 1, torch.Generator())
        torch.testing.assert_close(out, c0 * x0 + ct * xt)
    # the last step lands on the clean estimate
    torch.testing.assert_close(corr.step(x0, xt, 10, -1, torch.Generator()), x0)
    # the step's noise has the fixed "large" variance beta'
    monkeypatch.undo()
    # (images of 64 px: the noise's features are 64 px wide, an 8 px image sees little of
    # its variance)
    x0, xt = torch.randn(16, 1, 64, 64), torch.randn(16, 1, 64, 64)
    out = torch.stack([corr.step(x0, xt, 100, 90, torch.Generator().manual_seed(s))
                       for s in range(2)])
    beta = 1 - float(ab[100] / ab[90])
    noise_std = float((out[0] - out[1]).std() / math.sqrt(2))
    assert noise_std == pytest.approx(math.sqrt(beta) * 0.59, rel=0.15)


def test_walk_steps_cover_the_full_and_strided_walks() -> None:
    assert walk_steps(249, 250) == list(range(249, -1, -1))
    strided = walk_steps(249, 25)
    assert strided[0] == 249 and strided[-1] == 0 and len(strided) == 25
    assert max(a - b for a, b in zip(strided, strided[1:], strict=False)) <= 11
    with pytest.raises(ConfigError, match="inference.steps"):
        walk_steps(249, 251)


def test_walk_with_an_oracle_network_restores_the_clean_image() -> None:
    x = torch.rand(2, 1, 16, 16)
    corr = SimplexDiffusion()

    class Oracle(torch.nn.Module):
        def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            a = corr.alphas_bar[t].float().reshape(-1, 1, 1, 1)
            return (xt - a.sqrt() * to_signed(x)) / (1 - a).sqrt()

    amap, rest = restore_walk(Oracle(), x, 249, 10, corr, torch.Generator().manual_seed(0))
    torch.testing.assert_close(rest, x, atol=1e-5, rtol=0)
    assert float(amap.max()) < 1e-5


def test_patched_restoration_stitches_each_box_from_its_own_pass() -> None:
    x = torch.zeros(2, 1, 48, 64)
    x[:, :, :32, :] = 0.5  # the bottom row of boxes has no foreground
    corr = PatchedDiffusion(box=16)
    calls: list[torch.Tensor] = []

    class Recorder(torch.nn.Module):
        def forward(self, inp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            calls.append(inp.clone())
            assert int(t[0]) == 499
            return torch.full_like(inp, len(calls) / 100)  # each pass its own value

    _, rest = restore_patched(Recorder(), x, [499], corr, torch.Generator().manual_seed(0))
    boxes = [(y, x0) for y, x0 in corr.boxes(48, 64) if y < 32]
    assert len(calls) == len(boxes) == 8  # one pass per box with foreground
    for k, ((y, x0), inp) in enumerate(zip(boxes, calls, strict=True)):
        region = rest[..., y:y + 16, x0:x0 + 16]
        torch.testing.assert_close(region, torch.full_like(region, (k + 1) / 100))
        noised = (inp - to_signed(x)).abs() > 1e-6
        assert noised[..., y:y + 16, x0:x0 + 16].float().mean() > 0.9
        noised[..., y:y + 16, x0:x0 + 16] = False
        assert not noised.any()  # only that box is noised
    assert torch.equal(rest[..., 32:, :], x[..., 32:, :])  # boxes without brain left as is


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------


def test_setting_a_baseline_applies_its_inference_recipe() -> None:
    cfg = apply_overrides(RunConfig(), ["corruption.name=anoddpm"])
    cfg.validate()
    assert (cfg.inference.method, cfg.inference.levels, cfg.inference.steps) == ("walk", [249],
                                                                                 25)
    full = apply_overrides(RunConfig(), ["inference.steps=250", "corruption.name=anoddpm"])
    assert full.inference.steps == 250  # explicit inference settings win
    back = apply_overrides(cfg, ["corruption.name=dag"])
    back.validate()
    assert back.inference.method == "ensemble" and back.inference.levels == [0, 20, 40, 60, 80]
    p = get_method("pddpm").run_config(RunConfig())
    p.validate()
    assert (p.inference.method, p.inference.levels) == ("patched", [499])
    bad = RunConfig()
    bad.corruption.name = "pddpm"
    with pytest.raises(ConfigError, match="inference.method must be patched for "
                                          "corruption.name=pddpm"):
        bad.validate()
    with pytest.raises(ConfigError, match=r"inference.steps must be in \[1, 250\]"):
        apply_overrides(RunConfig(), ["corruption.name=anoddpm", "inference.steps=300"]
                        ).validate()


# --------------------------------------------------------------------------------------------
# training and detection on the tiny cohort
# --------------------------------------------------------------------------------------------


def _train(tmp_path_factory: pytest.TempPathFactory, cohort: list[np.ndarray], name: str):
    from disyre.training import train

    cfg = tiny_config(steps=120, lr=3e-3, warmup_steps=10, val_every=60, ema_decay=0.9)
    cfg = apply_overrides(cfg, [f"corruption.name={name}", "inference.window=0",
                                "inference.median_filter=0"])
    if name == "anoddpm":
        cfg.inference.steps = 10
    out = tmp_path_factory.mktemp(name) / "run"
    train(cfg, cohort[:4], cohort[4:], out, progress=False,
          data_info={"contrast": "t2", "spacing": [2.0, 2.0, 2.0]})
    return out


@pytest.fixture(scope="module")
def anoddpm_run(tmp_path_factory, tiny_cohort):
    return _train(tmp_path_factory, tiny_cohort, "anoddpm")


@pytest.fixture(scope="module")
def pddpm_run(tmp_path_factory, tiny_cohort):
    return _train(tmp_path_factory, tiny_cohort, "pddpm")


def _held_out(tiny_cohort: list[np.ndarray]) -> torch.Tensor:
    from disyre.config import SamplerConfig
    from disyre.data.sampler import PatchSampler

    return PatchSampler(tiny_cohort[4:], SamplerConfig(2, 8, 32), seed=123).sample()


def test_anoddpm_learns_to_predict_its_noise(anoddpm_run, tiny_cohort) -> None:
    from disyre.training.checkpoint import load_model

    model, cfg = load_model(anoddpm_run, "cpu")
    assert cfg.corruption.name == "anoddpm"
    x = _held_out(tiny_cohort)
    corr = SimplexDiffusion()
    res = corr(x, torch.Generator().manual_seed(5), alpha=0.25)  # step 250
    with torch.no_grad():
        eps = model(res.corrupted, res.level)
    t = int(res.level[0])
    x0 = from_signed(corr.x0_from_eps(res.corrupted, t, eps))
    # the identity: the noised patch with its signal rescaled, clipped like the estimate
    ident = from_signed((res.corrupted / float(corr.alphas_bar[t]) ** 0.5).clamp(-1, 1))
    err_model, err_identity = float(((x0 - x) ** 2).mean()), float(((ident - x) ** 2).mean())
    assert err_model < 0.8 * err_identity, (err_model, err_identity)  # measured 0.60
    # and the noise itself: measured 0.47 of predicting none
    assert float(((eps - res.target) ** 2).mean()) < 0.7 * float((res.target ** 2).mean())


def test_pddpm_learns_to_restore_its_box(pddpm_run, tiny_cohort) -> None:
    from disyre.training.checkpoint import load_model

    model, cfg = load_model(pddpm_run, "cpu")
    assert cfg.corruption.name == "pddpm" and cfg.corruption.window == 16
    from disyre.config import SamplerConfig
    from disyre.data.sampler import PatchSampler

    # held-out whole slices and boxes of detection's grid: the geometry pddpm trains on
    x = PatchSampler(tiny_cohort[4:], SamplerConfig(2, 8, 32), seed=123, whole_slices=True,
                     size_multiple=model.min_size).sample()
    res = PatchedDiffusion(box=16, on_brain=True)(x, torch.Generator().manual_seed(5),
                                                  alpha=0.5)
    with torch.no_grad():
        y = model(res.corrupted, res.level)
    box = res.mask > 0.5
    # the identity: the noised box with its signal rescaled, clipped to the image range
    a = float(PatchedDiffusion().alphas_bar[int(res.level[0])])
    ident = from_signed((res.corrupted / a ** 0.5).clamp(-1, 1))
    err_model = float(((y - x)[box] ** 2).mean())
    err_identity = float(((ident - x)[box] ** 2).mean())
    assert err_model < 0.7 * err_identity, (err_model, err_identity)  # measured 0.34 at t_test


@pytest.mark.parametrize("run", ["anoddpm_run", "pddpm_run"])
def test_diffusion_baselines_find_a_planted_lesion_better_than_chance(run, request) -> None:
    aps, prev = planted_lesion_aps(request.getfixturevalue(run))
    assert np.mean(aps) > 4 * np.mean(prev), (aps, prev)


@pytest.mark.parametrize(("run", "other"), [("anoddpm_run", "patched"),
                                            ("pddpm_run", "walk"),
                                            ("tiny_run", "walk")])
def test_a_checkpoint_refuses_another_methods_restoration(run, other, request, capsys
                                                           ) -> None:
    from disyre.cli import main
    from tests.helpers import write_nifti

    path = request.getfixturevalue(run)
    path = getattr(path, "path", path)
    scan = request.getfixturevalue("tmp_path") / "s.nii.gz"
    write_nifti(scan, synthetic_cohort(1, seed=3)[0] * 900, dhw=True)
    rc = main(["detect", "-i", str(scan), "-o", str(scan.parent / "maps"), "--checkpoint",
               str(path), "--device", "cpu", "--set", f"inference.method={other}"])
    err = capsys.readouterr().err
    assert rc == 1 and "inference.method" in err and err.strip().count("\n") == 0, err
