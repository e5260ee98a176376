"""report.html in a real browser: headless Chromium (Debian's package) opens generated pages
from ``file://`` and is driven through Playwright (which downloads no browser of its own).

The pages come from the real routes on the tiny cohort: ``disyre evaluate --checkpoint`` with
the session's trained tiny run, ``disyre detect --html``, and the benchmark's comparison page
of two methods. Skipped only where Chromium is not installed on a developer's machine; under
CI (``CI`` set) a missing browser fails.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from disyre.cli import main
from tests.helpers.cohort import write_nifti_cohort

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# the tiny cohort is no T2 brain: detect's contrast check says so, and it does not matter here
pytestmark = pytest.mark.filterwarnings("ignore:.*brain intensity distribution differs")

if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM}: not found; .ci/run installs Debian's chromium")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium); the browser "
                "tests of report.html need it", allow_module_level=True)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for the module (a persistent context: its own profile folder)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            headless=False, args=ARGS, viewport={"width": 1400, "height": 900})
        yield ctx
        ctx.close()


class Page:
    """A page opened from ``file://`` that records console errors and every request."""

    def __init__(self, ctx, path: Path) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = ctx.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_selector("body[data-ready='1']", timeout=15000)

    def pixels(self, method: int, view: str) -> list[int]:
        """RGBA bytes of a method's view canvas."""
        return self.page.evaluate(
            """([mi, view]) => {
                 const c = document.querySelector(
                   `.method[data-index="${mi}"] canvas.view[data-view="${view}"]`);
                 return Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data);
               }""", [method, view])

    def subjects(self) -> list[str]:
        return self.page.eval_on_selector_all(
            "#case-table tbody tr", "rows => rows.map(r => r.cells[0].textContent)")

    def close(self) -> None:
        self.page.close()


def _drawn(px: list[int]) -> bool:
    """Not a blank canvas: opaque pixels of more than one colour."""
    a = np.asarray(px, np.uint8).reshape(-1, 4)
    return bool((a[:, 3] > 0).all() and len(np.unique(a[:, :3], axis=0)) > 10)


def _hot(px: list[int]) -> int:
    """Overlay pixels (the colour ramp is red-dominant; the scan is grey)."""
    a = np.asarray(px, np.int32).reshape(-1, 4)
    return int(((a[:, 0] - a[:, 2]) > 40).sum())


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_run):
    """``disyre evaluate`` of the tiny cohort with the trained tiny run: a report folder."""
    root = tmp_path_factory.mktemp("html")
    manifest = write_nifti_cohort(root / "cohort", n_val=2, n_test_lesion=4, n_test_healthy=1)
    out = root / "report"
    assert main(["evaluate", "--manifest", str(manifest), "--checkpoint", str(tiny_run.path),
                 "-o", str(out), "--bootstrap", "20", "--device", "cpu"]) == 0
    return out


def test_report_page_draws_every_view_and_the_threshold_moves_the_overlay(browser, evaluated):
    assert (evaluated / "report.html").is_file() and (evaluated / "report.md").is_file()
    pg = Page(browser, evaluated / "report.html")
    try:
        for view in ("axial", "coronal", "sagittal"):
            assert _drawn(pg.pixels(0, view)), view
        slider = pg.page.locator(".method[data-index='0'] input.threshold")
        start = float(slider.input_value())
        th = _threshold(evaluated, "0.01")
        assert start == pytest.approx(th)  # starts at the 1 % healthy threshold
        assert "1 % healthy FPR" in pg.page.inner_text(".method[data-index='0'] .thr-value")
        before = pg.pixels(0, "axial")
        slider.focus()
        pg.page.keyboard.press("Home")  # the lowest threshold: the whole map shows
        after = pg.pixels(0, "axial")
        assert float(slider.input_value()) == 0.0
        assert before != after and _hot(after) > _hot(before)
        # scrolling moves the axial slice; the slice slider follows
        s = pg.page.locator(".method[data-index='0'] input.slice[data-view='axial']")
        z0 = int(s.input_value())
        pg.page.locator(".method[data-index='0'] canvas.view[data-view='axial']").hover()
        pg.page.mouse.wheel(0, 120 if z0 > 0 else -120)
        assert int(s.input_value()) != z0
        # the report's tables and figures are on the page, embedded
        text = pg.page.inner_text("#report")
        assert "Lesion-wise detection" in text and "Pixel-wise" in text
        srcs = pg.page.eval_on_selector_all("#report img", "im => im.map(i => i.src)")
        assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
        assert pg.errors == []
        assert all(u.startswith(("file:", "data:", "blob:")) for u in pg.requests), pg.requests
    finally:
        pg.close()


def _threshold(report: Path, key: str) -> float:
    import json

    return json.loads((report / "metrics.json").read_text())["thresholds"]["fpr"][key]


def test_case_list_sorts_by_ap_score_and_name(browser, evaluated):
    rows = list(csv.DictReader((evaluated / "cases.csv").open()))
    ap = {r["subject"]: float(r["ap"]) if r["ap"] else math.nan for r in rows}
    score = {r["subject"]: float(r["score_1cm3"]) for r in rows}
    pg = Page(browser, evaluated / "report.html")
    try:
        assert pg.subjects() == [r["subject"] for r in rows]
        pg.page.click("#case-table th[data-sort='ap']")
        with_ap = sorted((s for s in ap if not math.isnan(ap[s])), key=lambda s: -ap[s])
        assert pg.subjects() == with_ap + [s for s in ap if math.isnan(ap[s])]
        assert pg.subjects() != [r["subject"] for r in rows]  # the order changed
        pg.page.click("#case-table th[data-sort='ap']")  # again: ascending
        assert pg.subjects()[:len(with_ap)] == with_ap[::-1]
        pg.page.click("#case-table th[data-sort='score']")
        assert pg.subjects() == sorted(score, key=lambda s: -score[s])
        pg.page.click("#case-table th[data-sort='subject']")
        assert pg.subjects() == sorted(score)
        # a click on a row opens that case
        last = pg.subjects()[-1]
        pg.page.click(f"#case-table tbody tr:has-text('{last}')")
        pg.page.wait_for_function(
            f"document.getElementById('case-title').textContent.startsWith('{last}')")
        assert _drawn(pg.pixels(0, "coronal"))
        assert pg.errors == []
    finally:
        pg.close()


def test_comparison_page_shows_methods_side_by_side(browser, tmp_path):
    from disyre.evaluation import Case, evaluate_cases
    from disyre.evaluation.html import write_comparison_html

    rng = np.random.default_rng(0)
    shape = (8, 30, 30)
    brain = np.zeros(shape, bool)
    brain[1:-1, 3:-3, 3:-3] = True
    labels = []
    for i in range(3):
        lab = np.zeros(shape, bool)
        lab[3:6, 8 + 3 * i:14 + 3 * i, 10:16] = True
        labels.append(lab)
    noise = [rng.random(shape) for _ in range(5)]

    def run(gain: float):
        cases = [Case(f"c{i}", ((0.3 * noise[i] + gain * lab) * brain).astype(np.float32), lab,
                      brain, brain * 0.7) for i, lab in enumerate(labels)]
        return evaluate_cases(cases, [((0.3 * n) * brain, brain) for n in noise[3:]], n_boot=0)

    path = write_comparison_html(tmp_path, {"strong": run(0.6), "weak": run(0.1)},
                                 "# comparison\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    pg = Page(browser, path)
    try:
        names = pg.page.eval_on_selector_all(".method .name", "n => n.map(x => x.textContent)")
        assert names == ["strong", "weak"]
        for mi in (0, 1):
            for view in ("axial", "coronal", "sagittal"):
                assert _drawn(pg.pixels(mi, view)), (mi, view)
        # each method starts at its own 1 % threshold; the strong map lights the lesion up
        assert _hot(pg.pixels(0, "axial")) > _hot(pg.pixels(1, "axial"))
        # one slice position for both: scrolling one method's view moves the other's
        s0 = pg.page.locator(".method[data-index='0'] input.slice[data-view='axial']")
        s1 = pg.page.locator(".method[data-index='1'] input.slice[data-view='axial']")
        s0.focus()
        pg.page.keyboard.press("ArrowRight")
        assert s1.input_value() == s0.input_value()
        assert pg.page.inner_text("#report table") and pg.errors == []
    finally:
        pg.close()


def test_detect_html_page_for_a_folder_without_labels(browser, tiny_run, tmp_path, capsys):
    manifest = write_nifti_cohort(tmp_path / "c", n_val=0, n_test_lesion=2, n_test_healthy=1)
    scans = tmp_path / "scans"
    scans.mkdir()
    for p in manifest.parent.glob("s?.nii.gz"):
        shutil.copy(p, scans / p.name)
    out = tmp_path / "maps"
    assert main(["detect", "-i", str(scans), "-o", str(out), "--checkpoint",
                 str(tiny_run.path), "--html", "--device", "cpu"]) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    pg = Page(browser, out / "report.html")
    try:
        assert pg.subjects() == ["s0", "s1", "s2"]
        for view in ("axial", "coronal", "sagittal"):
            assert _drawn(pg.pixels(0, view))
        assert pg.errors == []
    finally:
        pg.close()
    # sample mode has no maps to show
    assert main(["detect", "-i", str(scans), "-o", str(tmp_path / "o2"), "--checkpoint",
                 str(tiny_run.path), "--html", "--mode", "sample"]) == 1
    assert "--html" in capsys.readouterr().err
