"""``disyre corruptions``: writes the gallery PNG, refuses to overwrite, rejects bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from disyre.cli import main
from disyre.corruption.gallery import gallery_rows
from tests.helpers import write_nifti


def _scan(path: Path) -> Path:
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:20, :90, :80]
    inside = ((yy - 45) / 40) ** 2 + ((xx - 40) / 34) ** 2 + ((zz - 10) / 12) ** 2 < 1
    data = (inside * (100 + 50 * rng.random(inside.shape))).astype(np.float32)
    return write_nifti(path, data, dhw=True)


def test_gallery_png_written_and_not_overwritten(tmp_path: Path, capsys) -> None:
    scan = _scan(tmp_path / "scan.nii.gz")
    out = tmp_path / "g.png"
    assert main(["corruptions", "-o", str(out), "--image", str(scan), "--seed", "1"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = out.stat().st_mtime_ns
    assert main(["corruptions", "-o", str(out), "--image", str(scan)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert out.stat().st_mtime_ns == before
    assert main(["corruptions", "-o", str(tmp_path / "g.jpg"), "--image", str(scan)]) == 1
    assert main(["corruptions", "-o", str(tmp_path / "h.png"),
                 "--image", str(tmp_path / "missing.nii.gz")]) == 1
    assert "missing.nii.gz" in capsys.readouterr().err
    assert not (tmp_path / "h.png").exists()


def test_gallery_rows_grow_with_alpha() -> None:
    x = torch.zeros(3, 1, 80, 80)
    g = torch.Generator().manual_seed(0)
    x[:, :, 6:74, 10:70] = 0.2 + 0.7 * torch.rand(3, 1, 68, 60, generator=g)
    rows = gallery_rows(x, seed=2, alphas=(0.0, 0.3, 1.0))
    for name in ("dag", "fpi", "bias", "gaussian"):
        diff = (rows[name] - x[0, 0]).abs().flatten(1).sum(1)
        assert diff[0] < 0.01 * diff[2]  # exactly 0 for the synthetic anomalies
        assert diff[1] < diff[2], name
    m = rows["dag mask"]
    assert torch.equal(m[0], m[2])  # the same anomaly at every strength
