"""End to end: ``disyre demo --quick`` runs every stage and writes a complete report."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

pytest.importorskip("nilearn")

from disyre.cli import main  # noqa: E402


def _linked_files(md: Path) -> list[Path]:
    text = md.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [md.parent / link for link in links if not link.startswith("http")]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    rc = main(["demo", "-o", str(out), "--quick", "--no-progress"])
    return rc, out


def test_quick_demo_writes_reports_with_every_file_they_name(demo_run, capsys):
    rc, out = demo_run
    assert rc == 0
    meta = json.loads((out / "demo.json").read_text())
    comparison = Path(meta["comparison"])
    assert comparison.is_file()
    for md in [comparison, *map(Path, meta["reports"].values())]:
        assert md.is_file()
        links = _linked_files(md)
        assert links, f"{md} names no figures"
        missing = [str(p) for p in links if not p.is_file()]
        assert not missing, f"{md} names missing files: {missing}"
    # the autoencoder's maps post-processed as published and as every method's (two rows);
    # DISYRE's and the reference's recipe is the same under both protocols (one row each)
    assert set(meta["reports"]) == {"dag", "dae (published)", "dae (shared)", "reference"}
    # the two learned methods side by side where the CPU has AMX and two cores; the report
    # says how they were trained
    from disyre.runtime import SIDE_BY_SIDE_FLAGS, cpu_info, usable_cores

    side = usable_cores() >= 2 and any(f in cpu_info().flags for f in SIDE_BY_SIDE_FLAGS)
    assert meta["training"]["workers"] == (2 if side else 1)
    assert ("side by side" if side else "one after the other") in comparison.read_text()
    for name, md in meta["reports"].items():
        report = Path(md).parent
        m = json.loads((report / "metrics.json").read_text())
        # every method ranks lesion voxels above healthy ones better than a constant map
        # (AP = prevalence, AUROC = 0.5). Measured on quick demos of seeds 0-5: AP/prevalence
        # 2.6-7.7 and AUROC 0.73-0.94 for dag (after 4 steps its maps still follow the image
        # intensity, which flags bright lesions; dae within 0.1 of dag on seeds 0-3),
        # 1.3-8.1 and 0.64-0.87 for the reference; the bounds leave a margin below the
        # weakest seed.
        px = m["pixel"]
        learned = name != "reference"
        assert px["ap"] > (1.8 if learned else 1.2) * px["prevalence"] > 0, px
        assert px["auroc"] > (0.65 if learned else 0.6), px
        assert m["n_cases_with_lesion"] == 2
        # held-out healthy scan evaluated at the calibrated 1 % threshold
        assert math.isfinite(m["healthy_heldout"]["0.01"]["fpr"])
        assert (report / "thresholds.json").is_file()
        # lesion-wise and scan-level rows, and the page beside every report
        assert m["lesion_wise"]["n_lesions"] >= 2 and "recall_ci" in m["lesion_wise"]["at"]["0.01"]
        assert m["volume_level"]["top_1cm3"]["n_healthy_by_group"] == {"heldout": 1,
                                                                       "transfer": 1}
        inf = m["config"]["run"]["inference"] if learned else m["config"]["inference"]
        if name == "dae (published)":  # the autoencoder's own recipe (docs/methods.md)
            assert m["post_processing"]["protocol"] == "published"
            assert (m["post_processing"]["erosion_iterations"],
                    m["post_processing"]["median_size"],
                    m["post_processing"]["median_dim"]) == (2, 5, 2)
        else:  # the shared recipe: the default 3-voxel median filter
            assert m["post_processing"]["median_filter"] == inf["median_filter"] == 3
        assert Path(meta["html"][name]).is_file()
    assert Path(meta["html"]["comparison"]).is_file()
    for r in meta["summary"]:
        assert r["pixel_ap"] is not None and r["best_dice_oracle"] is not None


def test_quick_demo_refuses_to_overwrite_then_reuses_cohort(demo_run, capsys):
    rc, out = demo_run
    assert rc == 0
    capsys.readouterr()
    assert main(["demo", "-o", str(out), "--quick", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and str(out) in err
    img = out / "cohort" / "images" / "demo-000.nii.gz"
    mtime = img.stat().st_mtime_ns
    assert main(["demo", "-o", str(out), "--quick", "--no-progress", "--overwrite",
                 "--methods", "reference"]) == 0
    printed = capsys.readouterr().out
    assert "reference" in printed and "report:" in printed
    assert img.stat().st_mtime_ns == mtime  # cohort reused, not regenerated
    assert json.loads((out / "demo.json").read_text())["cohort_reused"] is True


def test_readme_block_is_generated_from_the_run(demo_run, tmp_path):
    from disyre.demo.readme import END, START, update_readme

    _, out = demo_run
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{START}\nold text\n{END}\n\n## after\n")
    update_readme(out, readme, tmp_path / "docs" / "img")
    text = readme.read_text()
    summary = json.loads((out / "demo.json").read_text())["summary"]
    assert "old text" not in text and "## after" in text and text.count(START) == 1
    for row in summary:  # every method's AP and lesion recall appear, as computed by the run
        assert f"{row['pixel_ap']:.3f}" in text
        ci = row["lesion_recall_at_1pct_ci"]
        assert f"{row['lesion_recall_at_1pct']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" in text
    runtime = json.loads((out / "benchmark" / "dag" / "run" / "run.json").read_text())["runtime"]
    where = runtime["cpu"] if runtime["device"] == "cpu" else runtime["device"]
    assert f"{runtime['precision']} on {where}" in text  # the figures' precision and machine
    # the post-processing as applied: the shared 3-voxel filter for every map, or for every
    # map but the rows of methods post-processed as published (the autoencoder's)
    if any(r["method"].endswith("(published)") for r in summary):
        assert ("maps through a 3-voxel 3D median filter (the shared post-processing) except "
                "the rows marked published") in text
    else:
        assert "every method's maps through a 3-voxel 3D median filter" in text
    for link in _linked_files(readme):
        assert link.is_file(), link
    update_readme(out, readme, tmp_path / "docs" / "img")  # idempotent
    assert readme.read_text() == text


def test_demo_budget_experiment_trains_candidates_and_evaluates_kept_checkpoints(
        demo_run, tmp_path, capsys):
    from benchmarks.experiments.demo_budget import Candidate
    from benchmarks.experiments.demo_budget import main as budget

    _, out = demo_run
    res = tmp_path / "budget"
    args = ["--cache", str(out / "cache"), "--out", str(res), "--eval-every", "2",
            "--candidate", "lr=3e-4,steps=4,patch=32,volumes=2,slices=2,levels=0/50"]
    assert budget(args) == 0
    doc = json.loads((res / "budget.json").read_text())
    (entry,) = doc["candidates"].values()
    assert sorted(entry["points"], key=int) == ["2", "4"]  # every kept checkpoint, no other
    assert entry["train"]["lr"] == 3e-4 and entry["train"]["patches_per_step"] == 4
    aps = [p["ap"] for p in entry["points"].values()]
    assert all(0 < a <= 1 for a in aps) and aps[0] != aps[1]  # the maps changed with training
    # a second call reuses the finished points and draws the figure
    fig = tmp_path / "budget.png"
    assert budget(["--out", str(res), "--plot", str(fig)]) == 0
    assert fig.is_file() and "| 4 |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not key=value"):
        Candidate.parse("rate=3")
