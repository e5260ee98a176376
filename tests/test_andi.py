"""ANDi (``andi``): the pyramidal noise, the forward process, the normative scoring against the
DDPM formulas, training and detection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from disyre.config import ConfigError, RunConfig, apply_overrides
from disyre.corruption.diffusion import T, linear_alphas_bar, to_signed
from disyre.inference.postprocess import PUBLISHED
from disyre.methods import get_method
from disyre.methods.andi import (
    DISCOUNT,
    SCORE_FIRST,
    SCORE_LAST,
    AndiDiffusion,
    normative_scores,
    pyramid_noise,
    score_steps,
)
from tests.helpers import synthetic_cohort, tiny_config
from tests.helpers.cohort import planted_lesion_aps


def _corr(n: torch.Tensor, lag: int) -> float:
    a, b = n[..., :-lag].ravel().numpy(), n[..., lag:].ravel().numpy()
    return float(np.corrcoef(a, b)[0, 1])


# --------------------------------------------------------------------------------------------
# the pyramidal noise and the forward process
# --------------------------------------------------------------------------------------------


def test_pyramid_noise_has_unit_variance_and_its_discount_sets_the_correlation() -> None:
    g = torch.Generator().manual_seed(0)
    corr = {}
    for d in (0.0, 0.5, DISCOUNT, 0.95):
        n = pyramid_noise((32, 1, 64, 64), g, discount=d)
        assert float(n.std()) == pytest.approx(1.0, abs=1e-4) and abs(float(n.mean())) < 0.2
        corr[d] = [_corr(n, lag) for lag in (1, 2, 8, 32)]
    # discount 0: the full-resolution levels alone, i.e. white noise
    assert max(abs(c) for c in corr[0.0]) < 0.02, corr[0.0]
    # the coarse levels weigh discount ** i: the correlation at every lag grows with it
    for lo, hi in ((0.0, 0.5), (0.5, DISCOUNT), (DISCOUNT, 0.95)):
        assert all(a < b for a, b in zip(corr[lo], corr[hi], strict=True)), (lo, hi, corr)
    # at 0.8 the pyramid reaches across the whole patch (a 1-pixel level: a per-image offset)
    assert corr[DISCOUNT][3] > 0.05, corr
    # each sample its own noise; the same generator state gives the same noise
    n1 = pyramid_noise((2, 1, 32, 32), torch.Generator().manual_seed(3))
    n2 = pyramid_noise((2, 1, 32, 32), torch.Generator().manual_seed(3))
    assert torch.equal(n1, n2) and not torch.allclose(n1[0], n1[1])


def test_the_forward_process_is_the_linear_ddpm_with_pyramid_noise() -> None:
    c = AndiDiffusion()
    assert torch.allclose(c.alphas_bar, linear_alphas_bar()) and len(c.alphas_bar) == T
    assert float(c.betas[0]) == pytest.approx(1e-4) and float(c.betas[-1]) == pytest.approx(0.02)
    x = torch.zeros(64, 1, 32, 32)
    x[:, :, 4:28, 4:28] = 0.5
    res = c(x, torch.Generator().manual_seed(0))
    assert int(res.level.min()) >= 1 and int(res.level.max()) <= T - 1
    t = res.level
    a = c.alphas_bar[t].float().reshape(-1, 1, 1, 1)
    assert torch.allclose(res.corrupted, a.sqrt() * to_signed(x) + (1 - a).sqrt() * res.target,
                          atol=1e-5)
    # the training noise is the pyramid (correlated), the scoring noise white
    assert _corr(res.target, 4) > 0.1
    xt = c.inference_input(x, 150, torch.Generator().manual_seed(1))
    white = (xt - c.alphas_bar[150].sqrt().float() * to_signed(x)) / (
        1 - c.alphas_bar[150]).sqrt().float()
    assert abs(_corr(white, 4)) < 0.03 and float(white.std()) == pytest.approx(1, abs=0.03)


def test_score_steps_are_every_step_from_75_to_199_by_default() -> None:
    m = get_method("andi")
    assert m.target == "noise" and m.augment is False and m.max_level == 999
    rc = m.run_config(RunConfig())
    rc.validate()
    assert (rc.inference.method, rc.inference.levels) == ("normative", [SCORE_FIRST, SCORE_LAST])
    assert score_steps(*rc.inference.levels, rc.inference.steps) == list(range(75, 200))
    assert PUBLISHED["andi"].median_size == 5 and PUBLISHED["andi"].median_dim == 3
    for bad, msg in ((["inference.levels=[75]"], r"inference.levels must be \[first, last\]"),
                     (["inference.steps=126"], r"inference.steps must be in \[1, 125\]")):
        with pytest.raises(ConfigError, match=msg) as e:
            apply_overrides(RunConfig(), ["corruption.name=andi", *bad]).validate()
        assert "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------
# the scoring against the DDPM formulas
# --------------------------------------------------------------------------------------------


class _Oracle(nn.Module):
    """Predicts the noise that turns ``x_t`` into the clean image it believes in, plus
    ``wobble * sin(3 x_t)`` (an error that depends on the noise drawn)."""

    def __init__(self, clean: torch.Tensor, wobble: float = 0.0) -> None:
        super().__init__()
        self.clean = to_signed(clean)
        self.ab = linear_alphas_bar()
        self.wobble = wobble

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.ab[t].float().reshape(-1, 1, 1, 1)
        return (xt - a.sqrt() * self.clean) / (1 - a).sqrt() + self.wobble * torch.sin(3 * xt)


def _direct(x: torch.Tensor, believed: torch.Tensor, steps: list[int], seed: int,
            aggregate: str = "geometric", wobble: float = 0.0) -> torch.Tensor:
    """The map from the DDPM formulas in float64: fresh white noise per step, the posterior
    mean of q(x_{t-1} | x_t, x_0) from x_0, the model mean from the predicted noise."""
    g = torch.Generator().manual_seed(seed)
    ab = linear_alphas_bar()
    x0, b0 = to_signed(x).double(), to_signed(believed).double()
    devs = []
    for t in steps:
        eps = torch.randn(x.shape, generator=g).double()
        a, ap = float(ab[t]), float(ab[t - 1])
        beta = 1 - a / ap
        xt = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
        mu_q = (math.sqrt(ap) * beta / (1 - a)) * x0 + (math.sqrt(1 - beta) * (1 - ap) / (1 - a)
                                                        ) * xt
        eps_hat = (xt - math.sqrt(a) * b0) / math.sqrt(1 - a) + wobble * torch.sin(3 * xt)
        mu_p = (xt - beta / math.sqrt(1 - a) * eps_hat) / math.sqrt(1 - beta)
        devs.append((mu_q - mu_p) ** 2)
    d = torch.stack(devs)
    return torch.exp(torch.log(d).mean(0)) if aggregate == "geometric" else d.mean(0)


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    clean = torch.tensor(synthetic_cohort(1, seed=2)[0][2:4, None])  # (2, 1, 40, 40)
    lesioned = clean.clone()
    lesioned[:, :, 12:20, 14:22] = (lesioned[:, :, 12:20, 14:22] + 0.3).clamp(max=1)
    return clean, lesioned


def test_an_oracle_network_scores_a_clean_image_zero_and_a_planted_deviation_high() -> None:
    clean, lesioned = _images()
    c = AndiDiffusion()
    steps = score_steps(75, 199, 25)
    zero, _ = normative_scores(_Oracle(clean), clean, steps, c, torch.Generator().manual_seed(0))
    assert float(zero.max()) < 1e-9
    amap, restored = normative_scores(_Oracle(clean), lesioned, steps, c,
                                      torch.Generator().manual_seed(0))
    les = torch.zeros_like(amap, dtype=torch.bool)
    les[:, :, 12:20, 14:22] = (lesioned != clean)[:, :, 12:20, 14:22]
    assert float(amap[les].min()) > 1e3 * float(amap[~les].max()) + 1e-12
    # the oracle's restoration is the clean image it believes in
    assert torch.allclose(restored, clean, atol=1e-4)


def test_the_map_is_the_geometric_mean_of_the_posterior_mean_distances() -> None:
    clean, lesioned = _images()
    steps = score_steps(75, 199, 9)
    amap, _ = normative_scores(_Oracle(clean, wobble=0.05), lesioned, steps, AndiDiffusion(),
                               torch.Generator().manual_seed(4))
    geo = _direct(lesioned, clean, steps, seed=4, wobble=0.05).float()
    arith = _direct(lesioned, clean, steps, seed=4, aggregate="arithmetic", wobble=0.05).float()
    les = torch.ones_like(amap, dtype=torch.bool)
    # float32 against float64: a step whose deviation nearly cancels is off by more
    rel = ((amap - geo).abs() / geo)[les]
    assert float(rel.median()) < 0.002 and float((rel < 0.05).float().mean()) > 0.99, rel
    # the two aggregations differ clearly here: the test tells them apart
    assert float(((arith - geo).abs() / geo)[les].median()) > 0.1


# --------------------------------------------------------------------------------------------
# training and detection on the tiny cohort
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def andi_run(tmp_path_factory, tiny_cohort):
    from disyre.training import train

    cfg = tiny_config(steps=150, lr=3e-3, warmup_steps=10, val_every=75, ema_decay=0.9)
    cfg = apply_overrides(cfg, ["corruption.name=andi", "inference.window=0",
                                "inference.median_filter=0", "inference.steps=8"])
    out = tmp_path_factory.mktemp("andi") / "run"
    train(cfg, tiny_cohort[:4], tiny_cohort[4:], out, progress=False,
          data_info={"contrast": "t2", "spacing": [2.0, 2.0, 2.0]})
    return out


def test_andi_learns_to_predict_its_noise(andi_run, tiny_cohort) -> None:
    from disyre.config import SamplerConfig
    from disyre.data.sampler import PatchSampler
    from disyre.training.checkpoint import load_model

    model, cfg = load_model(andi_run, "cpu")
    assert cfg.corruption.name == "andi" and cfg.inference.method == "normative"
    x = PatchSampler(tiny_cohort[4:], SamplerConfig(2, 8, 32), seed=123).sample()
    res = AndiDiffusion()(x, torch.Generator().manual_seed(5), alpha=150 / (T - 1))
    with torch.no_grad():
        eps = model(res.corrupted, res.level)
    err = float(((eps - res.target) ** 2).mean())
    untrained = float((res.target ** 2).mean())  # a fresh network predicts 0
    assert err < 0.7 * untrained, (err, untrained)


def test_andi_finds_a_planted_lesion_better_than_chance(andi_run) -> None:
    aps, prev = planted_lesion_aps(andi_run)
    assert np.mean(aps) > 4 * np.mean(prev), (aps, prev)


def test_an_andi_checkpoint_refuses_another_methods_inference(andi_run, tmp_path, capsys
                                                              ) -> None:
    from disyre.cli import main
    from tests.helpers import write_nifti

    scan = tmp_path / "s.nii.gz"
    write_nifti(scan, synthetic_cohort(1, seed=3)[0] * 900, dhw=True)
    rc = main(["detect", "-i", str(scan), "-o", str(tmp_path / "maps"), "--checkpoint",
               str(andi_run), "--device", "cpu", "--set", "inference.method=walk"])
    err = capsys.readouterr().err
    assert rc == 1 and "inference.method" in err and err.strip().count("\n") == 0, err


def test_andi_detection_is_repeatable_with_the_detectors_seed(andi_run) -> None:
    from disyre.inference import Detector

    vol = synthetic_cohort(1, seed=7)[0]
    maps = []
    for seed in (0, 0, 1):
        det = Detector.from_checkpoint(andi_run, device="cpu")
        det.seed = seed
        maps.append(det.map_preprocessed(vol, vol > 0))
    assert np.array_equal(maps[0], maps[1]) and not np.array_equal(maps[0], maps[2])
