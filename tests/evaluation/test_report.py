"""evaluate_cases on a tiny synthetic cohort, and the report / comparison it writes."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from disyre.evaluation import Case, evaluate_cases
from disyre.evaluation import metrics as M
from disyre.evaluation.report import write_comparison, write_report
from disyre.io_utils import OutputExistsError

SHAPE = (6, 24, 24)


def _brain() -> np.ndarray:
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    return (y**2 + x**2 + 0.3 * z**2) < 0.8


def _cases(seed: int, n: int = 5, signal: float = 0.5, healthy_extra: int = 1):
    rng = np.random.default_rng(seed)
    brain = _brain()
    for i in range(n + healthy_extra):
        lab = np.zeros(SHAPE, bool)
        if i < n:
            c = rng.integers(8, 16, size=2)
            r = 2 + i % 3
            lab[1:4, c[0] - r:c[0] + r, c[1] - r:c[1] + r] = True
            lab &= brain
        amap = (0.4 * rng.random(SHAPE) + signal * lab) * brain
        img = brain * 0.6
        yield Case(f"sub-{i:02d}", amap.astype(np.float32), lab, brain, img)


def _healthy(seed: int, n: int = 3):
    rng = np.random.default_rng(seed)
    brain = _brain()
    return [((0.4 * rng.random(SHAPE) * brain).astype(np.float32), brain) for _ in range(n)]


def test_evaluate_cases_numbers() -> None:
    cases = list(_cases(0))
    res = evaluate_cases(iter(cases), healthy_maps=iter(_healthy(1)),
                         healthy_test_maps=_healthy(2), n_boot=100)
    ref = M.pixel_metrics([(c.anomaly_map, c.label, c.brain_mask) for c in cases])
    assert res.pixel.ap == ref.ap and res.pixel.auroc == ref.auroc
    assert len(res.cases) == 6 and res.cases[-1].n_lesion == 0
    # calibrated thresholds: healthy test voxels share the healthy distribution
    for f, v in res.calibrated.items():
        assert abs(v["fpr"] - f) < 0.02
        assert abs(res.healthy_heldout[f]["fpr"] - f) < 0.02
        assert v["recall"] > 0.9  # lesions score 0.5 above the healthy range [0, 0.4)
        d = [M.dice_at(c.anomaly_map, c.label, c.brain_mask, v["threshold"], strict=True)
             for c in cases if c.label.any()]
        assert v["mean_case_dice"] == pytest.approx(np.mean(d))
    # the volume-level table: 5 lesioned cases against the healthy test case and the 3
    # held-out healthy scans
    assert res.volume_level["max"]["n"] == 9 and res.volume_level["max"]["n_positive"] == 5
    assert res.volume_level["max"]["n_healthy_by_group"] == {"test": 1, "heldout": 3}
    assert res.slice_level["max"]["auroc"] > 0.95
    assert res.ci["ap"][0] <= res.pixel.ap + 0.02


def test_report_exists_and_every_linked_image_exists(tmp_path) -> None:
    import matplotlib

    res = evaluate_cases(_cases(3), healthy_maps=_healthy(4), n_boot=50)
    out = tmp_path / "rep"
    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a caller's (a notebook's) backend must stay as it is
    try:
        report = write_report(out, res, config={"manifest": "test.csv"})
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    text = report.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) >= 4
    for link in links:
        p = out / link
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link
    assert "ORACLE" in text
    m = json.loads((out / "metrics.json").read_text())
    assert m["pixel"]["ap"] == pytest.approx(res.pixel.ap)
    assert m["config"]["manifest"] == "test.csv" and "numpy" in m["provenance"]
    assert set(m["calibrated"]) == {"0.01", "0.05", "0.1"}
    rows = list(csv.DictReader((out / "cases.csv").open()))
    assert [r["subject"] for r in rows] == [f"sub-{i:02d}" for i in range(6)]
    assert float(rows[0]["ap"]) == pytest.approx(res.cases[0].ap, rel=1e-5)
    assert rows[-1]["ap"] == "" and "dice_fpr_0.05" in rows[0]
    with pytest.raises(OutputExistsError):
        write_report(out, res)
    write_report(out, res, overwrite=True)


def test_comparison(tmp_path) -> None:
    good = evaluate_cases(_cases(5, signal=0.5), healthy_maps=_healthy(6), n_boot=20)
    weak = evaluate_cases(_cases(5, signal=0.1), healthy_maps=_healthy(6), n_boot=20)
    path = write_comparison(tmp_path / "cmp", {"good": good.to_dict(), "weak": weak.to_dict()})
    text = path.read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (tmp_path / "cmp" / link).is_file()
    rows = list(csv.DictReader((tmp_path / "cmp" / "comparison.csv").open()))
    assert [r["method"] for r in rows] == ["good", "weak"]
    assert float(rows[0]["ap"]) > float(rows[1]["ap"])
    assert "dice_fpr_0.01" in rows[0]


def test_bad_cases_rejected() -> None:
    with pytest.raises(ValueError, match="sub-x: shape mismatch"):
        evaluate_cases([("sub-x", np.zeros(SHAPE), np.zeros((6, 24, 23)), None)])
    with pytest.raises(ValueError, match="no test cases"):
        evaluate_cases([])
    c = next(_cases(0))
    with pytest.raises(ValueError, match="listed twice"):
        evaluate_cases([c, c])
    bad = np.zeros(SHAPE, np.float32)
    bad[3, 10, 10] = np.nan
    with pytest.raises(ValueError, match=r"case sub-nan: anomaly map holds NaN"):
        evaluate_cases([("sub-nan", bad, np.zeros(SHAPE, bool), None)])


def test_lesion_outside_brain_is_counted_and_reported(tmp_path) -> None:
    """Every labelled voxel counts: the report states how many lie outside the brain mask,
    cases.csv lists them per case, and the volume score is detect's (mean of the top 1 cm^3,
    voxels counted by volume)."""
    from disyre.inference import volume_score

    cases = list(_cases(3))
    brain = _brain()
    lab = cases[0].label.copy()
    lab[0, 0:3, 0:3] = True  # three corners of the grid: outside the brain
    cases[0] = Case(cases[0].subject, cases[0].anomaly_map, lab, brain, cases[0].image,
                    voxel_mm3=8.0)
    res = evaluate_cases(iter(cases), healthy_maps=iter(_healthy(1)), n_boot=0)
    assert res.pixel.n_pos_outside == 9 and res.cases[0].n_lesion_outside == 9
    assert res.cases[0].n_lesion == int(lab.sum())
    ref = M.pixel_metrics([(c.anomaly_map, c.label, c.brain_mask) for c in cases])
    assert res.pixel.ap == ref.ap and res.pixel.n_pos == ref.n_pos
    c0 = cases[0]
    assert res.cases[0].score == pytest.approx(volume_score(c0.anomaly_map[brain],
                                                            voxel_mm3=8.0))
    assert "mean_slice" in res.slice_level and "top_1cm3" in res.volume_level
    out = write_report(tmp_path / "r", res)
    text = out.read_text()
    assert "9 lesion voxels" in text and "outside the brain mask" in text
    assert "mean over the whole slice (authors')" in text
    rows = list(csv.DictReader(open(tmp_path / "r" / "cases.csv")))
    assert rows[0]["lesion_voxels_outside_brain"] == "9"
    assert float(rows[0]["score_1cm3"]) == pytest.approx(res.cases[0].score, rel=1e-5)
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["pixel"]["n_lesion_voxels_outside_brain"] == 9
