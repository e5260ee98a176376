"""The denoising-autoencoder baseline (``dae``): its coarse noise, its training, its maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from disyre.config import ConfigError, InferenceConfig, RunConfig
from disyre.corruption.coarse_noise import CELL, STD, CoarseNoise, coarse_noise
from tests.helpers import synthetic_cohort, tiny_config
from tests.helpers.cohort import planted_lesion_aps


def _interp_var_factor(cell: int) -> float:
    """Mean over pixel positions of the variance of bilinear interpolation between
    independent unit-variance grid values (per axis ``(1-t)^2 + t^2``, t = k / cell)."""
    t = np.arange(cell) / cell
    return float(np.mean((1 - t) ** 2 + t ** 2)) ** 2


def test_coarse_noise_has_the_published_std_and_cell_size() -> None:
    n = coarse_noise((256, 1, 64, 64), torch.Generator().manual_seed(0)).numpy()[:, 0]
    # std 0.2 at the grid points; between them bilinear interpolation lowers the variance by
    # a known factor (0.2 x 0.66 on average for 8-px cells); within 3 %
    expected = STD * np.sqrt(_interp_var_factor(CELL))
    assert n.std() == pytest.approx(expected, rel=0.03)
    assert abs(n.mean()) < 0.01

    def corr(lag: int) -> float:
        a, b = n[:, :, :-lag].ravel(), n[:, :, lag:].ravel()
        return float(np.corrcoef(a, b)[0, 1])

    # correlated within a cell, independent two cells apart: blobs of about 8 px
    assert corr(1) > 0.95 and 0.3 < corr(CELL // 2) < 0.9 and abs(corr(2 * CELL)) < 0.03
    # white noise for a 1-px cell (the check above can fail)
    w = coarse_noise((64, 1, 32, 32), torch.Generator().manual_seed(1), cell=1).numpy()
    assert w.std() == pytest.approx(STD, rel=0.03)
    assert abs(np.corrcoef(w[..., :-1].ravel(), w[..., 1:].ravel())[0, 1]) < 0.03
    # each sample on its own shifted grid, the same for the same seed
    again = coarse_noise((256, 1, 64, 64), torch.Generator().manual_seed(0)).numpy()[:, 0]
    np.testing.assert_array_equal(n, again)


def test_corruption_noises_the_foreground_only_and_restores_the_scan_itself() -> None:
    x = torch.zeros(4, 1, 48, 48)
    x[:, :, 8:40, 8:40] = 0.5
    res = CoarseNoise()(x, torch.Generator().manual_seed(0))
    fg = x > 0
    assert torch.equal(res.corrupted[~fg], x[~fg])  # background stays exactly 0
    assert (res.corrupted[fg] - 0.5).std() > 0.05  # not clipped to [0, 1]
    assert torch.equal(res.clean, x) and torch.equal(res.mask, fg.float())
    assert res.level.tolist() == [0] * 4 and res.level.dtype == torch.int64
    assert torch.equal(CoarseNoise().inference_input(x, 0), x)


def test_config_requires_one_unnoised_restoration_for_dae() -> None:
    from disyre.methods import get_method

    cfg = RunConfig()
    cfg.corruption.name = "dae"
    with pytest.raises(ConfigError, match=r"inference must be method=ensemble and "
                       r"levels=\[0\] for corruption.name=dae"):
        cfg.validate()
    rc = get_method("dae").run_config(RunConfig())
    rc.validate()
    assert rc.corruption.name == "dae" and rc.inference.levels == [0]
    assert RunConfig().inference.levels != [0]  # the base is left as it was


@pytest.fixture(scope="module")
def dae_run(tmp_path_factory, tiny_cohort):
    from disyre.training import train

    cfg = tiny_config(steps=120, lr=3e-3, warmup_steps=10, val_every=60, ema_decay=0.9)
    cfg.corruption.name = "dae"
    cfg.inference = InferenceConfig(levels=[0], window=32, stride=16, batch_size=64,
                                    median_filter=0)
    out = tmp_path_factory.mktemp("dae") / "run"
    train(cfg, tiny_cohort[:4], tiny_cohort[4:], out, progress=False,
          data_info={"contrast": "t2", "spacing": [2.0, 2.0, 2.0]})
    return out


def test_dae_learns_to_remove_its_noise(dae_run, tiny_cohort) -> None:
    from disyre.config import SamplerConfig
    from disyre.data.sampler import PatchSampler
    from disyre.training.checkpoint import load_model

    model, cfg = load_model(dae_run, "cpu")
    assert cfg.corruption.name == "dae"  # the checkpoint says which method made it
    x = PatchSampler(tiny_cohort[4:], SamplerConfig(2, 8, 32), seed=123).sample()
    res = CoarseNoise()(x, torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = model(res.corrupted, res.level)
    m = res.mask > 0.5
    err_model = ((y - res.clean)[m] ** 2).mean()
    err_identity = ((res.corrupted - res.clean)[m] ** 2).mean()
    assert err_model < 0.7 * err_identity  # measured 0.55 (120 steps of the tiny network)


def test_dae_finds_a_planted_lesion_better_than_chance(dae_run) -> None:
    aps, prev = planted_lesion_aps(dae_run)
    assert np.mean(aps) > 5 * np.mean(prev), (aps, prev)


def test_dae_checkpoint_refuses_other_restorations(dae_run, capsys) -> None:
    from disyre.cli import main
    from tests.helpers import write_nifti

    scan = dae_run.parent / "s.nii.gz"
    write_nifti(scan, synthetic_cohort(1, seed=3)[0] * 900, dhw=True)
    rc = main(["detect", "-i", str(scan), "-o", str(dae_run.parent / "maps"), "--checkpoint",
               str(dae_run), "--device", "cpu", "--set", "inference.levels=[0,50]"])
    err = capsys.readouterr().err
    assert rc == 1 and "corruption.name=dae" in err and err.strip().count("\n") == 0
