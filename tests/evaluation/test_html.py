"""report.html without a browser: the embedded volumes, the Markdown, the page's data."""

from __future__ import annotations

import base64
import json
import re
import zlib

import numpy as np
import pytest

from disyre.evaluation.html import (
    markdown_to_html,
    pack_volume,
    render_page,
)


def _unpack(v, which: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(getattr(v, which)), np.uint8).reshape(v.shape)


def test_pack_crops_to_brain_and_label_and_quantises_down():
    rng = np.random.default_rng(0)
    amap = np.zeros((20, 30, 40), np.float32)
    brain = np.zeros(amap.shape, bool)
    brain[5:15, 10:20, 10:30] = True
    amap[brain] = rng.random(int(brain.sum())) * 0.6
    lab = np.zeros(amap.shape, bool)
    lab[8:10, 19:22, 12:14] = True  # leaves the brain by two voxels in H
    img = np.where(brain, 500 + 100 * rng.random(amap.shape), 0)
    v = pack_volume(amap, lab, brain, image=img, spacing=(2.0, 1.0, 1.0))
    # box: brain and label, + 2 voxels
    assert v.origin == (3, 8, 8) and v.shape == (14, 16, 24) and v.factor == 1
    assert v.spacing == (2.0, 1.0, 1.0)
    crop = tuple(slice(o, o + s) for o, s in zip(v.origin, v.shape, strict=True))
    codes = _unpack(v, "map").astype(float)
    assert v.scale == pytest.approx(amap.max())
    # rounded down: a voxel shown above t (code * scale / 255 > t) is above t in the map
    shown = codes * v.scale / 255
    assert (shown <= amap[crop] + 1e-7).all() and (amap[crop] - shown < v.scale / 255).all()
    assert (_unpack(v, "label") == lab[crop]).all()
    im = _unpack(v, "image")
    assert im.max() == 255 and im[~brain[crop]].max() == 0


def test_pack_large_volume_on_coarser_grid_keeps_hot_voxels():
    amap = np.zeros((40, 40, 40), np.float32)
    amap[17, 23, 5] = 0.9  # one hot voxel
    lab = np.zeros(amap.shape, bool)
    lab[30, 30, 30] = True
    v = pack_volume(amap, lab, None, max_voxels=40**3 // 8)
    assert v.factor == 2 and v.shape == (20, 20, 20) and v.spacing == (2.0, 2.0, 2.0)
    assert _unpack(v, "map")[8, 11, 2] == 255  # block maximum
    assert _unpack(v, "label")[15, 15, 15] == 1


def test_markdown_tables_images_links_and_escaping(tmp_path):
    png = tmp_path / "figures" / "a.png"
    png.parent.mkdir()
    png.write_bytes(b"\x89PNG fake")
    md = ("# Title\n\nA `score > t` rule, *oracle* and [metrics](metrics.json).\n\n"
          "| a | b |\n|---|---|\n| <x> | 1 |\n\n![fig](figures/a.png) ![gone](figures/b.png)\n")
    out = markdown_to_html(md, tmp_path)
    assert "<h1>Title</h1>" in out
    assert "<code>score &gt; t</code>" in out and "<em>oracle</em>" in out
    assert '<a href="metrics.json">metrics</a>' in out
    assert "<td>&lt;x&gt;</td>" in out and "<th>a</th>" in out
    src = re.search(r'<img alt="fig" src="([^"]+)"', out).group(1)
    assert base64.b64decode(src.split(",", 1)[1]) == png.read_bytes()
    assert '<img alt="gone" src="figures/b.png">' in out  # missing file: left as a link


def test_page_data_is_valid_json_and_cannot_close_its_script():
    v = pack_volume(np.ones((2, 3, 4), np.float32), None, None)
    page = render_page({"kind": "report", "methods": [{"name": "m", "thresholds": {}}],
                        "cases": [{"subject": "</script><b>x", "metrics": {"m": {"ap": float(
                            "nan")}}}]}, [{"m": v}])
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page,
                  re.S)
    data = json.loads(m.group(1))
    assert data["cases"][0]["subject"] == "</script><b>x"
    assert data["cases"][0]["metrics"]["m"]["ap"] is None  # NaN: null
    assert data["cases"][0]["volume"]["maps"]["m"]["block"] == "v0-map0"
    assert 'id="v0-map0">' in page and 'id="v0-label"' not in page  # no label given
    assert "<script src=" not in page and "http" not in page.split("<script>")[-1]


def test_write_report_writes_html_with_every_case(tmp_path):
    from disyre.evaluation import Case, evaluate_cases
    from disyre.evaluation.report import write_report

    rng = np.random.default_rng(0)
    brain = np.ones((6, 16, 16), bool)
    cases = []
    for i in range(3):
        lab = np.zeros(brain.shape, bool)
        lab[2:4, 4 + i:8 + i, 5:9] = i < 2
        cases.append(Case(f"s{i}", (0.3 * rng.random(brain.shape) + 0.6 * lab)
                          .astype(np.float32), lab, brain, brain * 1.0))
    held = [Case("h0", (0.3 * rng.random(brain.shape)).astype(np.float32), None, brain)]
    res = evaluate_cases(cases, [(0.3 * rng.random(brain.shape), brain)],
                         healthy_test_maps=held, n_boot=20,
                         post_processing={"median_filter": 3})
    write_report(tmp_path / "r", res)
    page = (tmp_path / "r" / "report.html").read_text()
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.S).group(1))
    assert [c["subject"] for c in data["cases"]] == ["s0", "s1", "s2", "h0"]
    assert [c["group"] for c in data["cases"]] == ["test", "test", "test", "heldout"]
    assert data["default_fpr"] == "0.01" and data["post_processing"] == {"median_filter": 3}
    assert data["methods"][0]["thresholds"]["0.01"] == res.thresholds.fpr[0.01]
    found, n, _fp = data["cases"][0]["metrics"]["map"]["lesions"]["0.01"]
    assert n == 1 and found == int(res.cases[0].lesions.detected[0].sum())
    md = (tmp_path / "r" / "report.md").read_text()
    assert "3D median filter of size 3" in md and "## Lesion-wise detection" in md
    assert "1 held-out healthy scan" in md
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["post_processing"] == {"median_filter": 3}
    rows = (tmp_path / "r" / "cases.csv").read_text().splitlines()
    assert rows[0].endswith("fp_blobs_fpr_0.1") and rows[-1].startswith("h0,")


def test_volumes_beyond_the_limit_are_listed_without_them(tmp_path):
    from disyre.evaluation import Case, evaluate_cases
    from disyre.evaluation.report import write_report

    brain = np.ones((4, 10, 10), bool)
    lab = np.zeros(brain.shape, bool)
    lab[1:3, 3:6, 3:6] = True
    cases = [Case(f"s{i}", (0.5 * lab + 0.1 * i).astype(np.float32), lab, brain)
             for i in range(3)]
    res = evaluate_cases(cases, [(np.zeros(brain.shape), brain)], n_boot=0, viewer=2)
    assert [r.viewer is not None for r in res.cases] == [True, True, False]
    write_report(tmp_path / "r", res)
    page = (tmp_path / "r" / "report.html").read_text()
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.S).group(1))
    assert [c["volume"] is None for c in data["cases"]] == [False, False, True]
    assert "1 of 3 scans are listed without their volume" in page
