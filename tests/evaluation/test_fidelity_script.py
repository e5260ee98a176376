"""benchmarks.experiments.fidelity: its rows, configs and table (the runs themselves take
minutes: the ``--quick`` mode is run by hand, see docs/fidelity.md)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def fidelity():
    from benchmarks.experiments import fidelity

    return fidelity


def test_rows_switch_one_thing_at_a_time(fidelity) -> None:
    rows = {r.key: r for r in fidelity.ablation_rows()}
    assert list(rows) == ["legacy", "authors", "scaling", "bias_selection", "shapes",
                          "augment_recipe"]
    assert rows["legacy"].switches == fidelity.LEGACY
    assert rows["authors"].switches == fidelity.AUTHORS
    for key in ("scaling", "bias_selection", "shapes", "augment_recipe"):
        diff = {k for k, v in rows[key].switches.items() if v != fidelity.AUTHORS[k]}
        assert len(diff) == 1 and diff.pop().endswith(key)


def test_run_config_applies_the_switches_to_the_demo_settings(fidelity) -> None:
    from disyre.config import RunConfig

    s = fidelity.FidelitySettings(contrasts=["t1"], quick=True, n_test_lesion=5, steps=7)
    demo = fidelity.demo_settings(s, "t1")
    assert demo.cohort.contrast == "t1" and demo.cohort.n_test_lesion == 5
    assert demo.steps == 7 and demo.preset == "tiny" and demo.methods == ["dag"]
    cfg = fidelity.run_config(demo, fidelity.LEGACY)
    assert (cfg.intensity.scaling, cfg.corruption.bias_selection, cfg.corruption.shapes,
            cfg.corruption.augment_recipe) == ("brain", "single", "legacy", "legacy")
    assert cfg.sampler.patch_size == demo.patch  # the rest is the demo's
    authors = fidelity.run_config(demo, fidelity.AUTHORS)
    default = RunConfig()  # the authors' values are the defaults
    assert authors.intensity == default.intensity
    assert (authors.corruption.shapes, authors.corruption.bias_selection,
            authors.corruption.augment_recipe) == (default.corruption.shapes,
                                                   default.corruption.bias_selection,
                                                   default.corruption.augment_recipe)


def test_table_has_the_columns_and_intervals(fidelity) -> None:
    metrics = {"pixel": {"ap": 0.61, "best_dice_oracle": 0.55},
               "bootstrap_ci": {"ap": [0.52, 0.70], "best_dice_oracle": [0.5, 0.6]},
               "calibrated": {"0.01": {"dice": 0.41}},
               "healthy_heldout": {"0.01": {"fpr": 0.0123, "n_volumes": 4}},
               "healthy_transfer": {"0.01": {"fpr": 0.0283, "n_volumes": 5}},
               "n_cases_with_lesion": 12}
    h = fidelity.headline(metrics)
    assert h["ap"] == 0.61 and h["ap_ci"] == [0.52, 0.70] and h["heldout_fpr_1pct"] == 0.0123
    assert h["transfer_fpr_1pct"] == 0.0283
    doc = {"settings": {"quick": False, "n_boot": 1000, "seed": 0, "steps": 650,
                        "preset": "small",
                        "cohorts": {"t2": {"n_train": 16, "n_val": 3, "n_test_healthy": 3,
                                           "n_test_lesion": 12}}},
           "results": {"t2": {"authors": {"label": "authors' recipe (all four)",
                                          "switches": fidelity.AUTHORS,
                                          "codebook": [0.2, 0.4, 0.6, 0.8, 0.95], **h}}}}
    md = fidelity.markdown(doc)
    assert "| configuration | pixel AP [95 % CI] | best Dice (oracle) [95 % CI] " in md
    assert "| authors' recipe (all four) | 0.610 [0.520, 0.700] | 0.550 [0.500, 0.600] | " \
           "0.410 | 1.23 % |" in md
    assert "12 lesioned test subjects" in md
    assert "fitted with `whole_volume` scaling: 0.200, 0.400, 0.600, 0.800, 0.950" in md


def test_bad_rows_are_refused_and_rows_done_earlier_are_reused(fidelity, tmp_path, capsys,
                                                               monkeypatch) -> None:
    import json

    import disyre.benchmark

    assert fidelity.main(["--out", str(tmp_path / "a"), "--quick", "--rows", "nope"]) == 1
    assert "unknown rows" in capsys.readouterr().err

    def no_training(*a, **k):
        raise AssertionError("a row done earlier was run again")

    monkeypatch.setattr(disyre.benchmark, "run_benchmark", no_training)
    out = tmp_path / "b"
    done = {"label": "authors' recipe (all four)", "switches": fidelity.AUTHORS, "ap": 0.25,
            "ap_ci": [0.2, 0.3], "best_dice": 0.3, "best_dice_ci": [0.25, 0.35],
            "dice_1pct": 0.28, "heldout_fpr_1pct": 0.01, "codebook": None}
    (out / "t2" / "authors").mkdir(parents=True)
    (out / "t2" / "authors" / "headline.json").write_text(json.dumps(done))
    s = fidelity.FidelitySettings(contrasts=["t2"], quick=True, rows=["authors"])
    doc = fidelity.run_fidelity(out, s)
    assert doc["results"]["t2"]["authors"]["ap"] == 0.25
    assert "| authors' recipe (all four) | 0.250 [0.200, 0.300] |" in \
        (out / "fidelity.md").read_text()
    # a row done with another training budget is run again, not reused
    (out / "t2" / "authors" / "headline.json").write_text(json.dumps({**done, "budget": {
        "steps": 99999, "preset": "tiny", "n_boot": 20, "seed": 0}}))
    with pytest.raises(AssertionError, match="run again"):
        fidelity.run_fidelity(out, s)
    # fp32 rows are kept apart from the default precision's
    assert fidelity.run_config(fidelity.demo_settings(s, "t2"), fidelity.AUTHORS,
                               "fp32").train.precision == "fp32"
