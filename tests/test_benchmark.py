"""Benchmark orchestrator: method parsing, the non-learned reference end to end, the CLI."""

from __future__ import annotations

import json

import pytest

from disyre.benchmark import normalise_methods, run_benchmark
from disyre.config import ConfigError
from disyre.io_utils import OutputExistsError


def test_normalise_methods_aliases_and_errors():
    assert normalise_methods("disyre, gaussian,reference") == ["dag", "gaussian", "reference"]
    assert normalise_methods(["FPI", "bias"]) == ["fpi", "bias"]
    with pytest.raises(ConfigError, match="unknown method 'ddpm'"):
        normalise_methods("dag,ddpm")
    with pytest.raises(ConfigError, match="twice"):
        normalise_methods("dag,disyre")
    with pytest.raises(ConfigError, match="no methods"):
        normalise_methods([])


@pytest.fixture(scope="module")
def cohort_cache(tmp_path_factory):
    pytest.importorskip("nilearn")
    from tests.helpers.cohort import small_benchmark_cache

    return small_benchmark_cache(tmp_path_factory.mktemp("bench"))


def test_reference_benchmark_reports_and_finds_lesions(cohort_cache):
    root, _, cache = cohort_cache
    res = run_benchmark(["reference"], cache, root / "b1", n_boot=10, progress=False)
    m = res.metrics["reference"]
    # a real detector on this cohort: better than a random map (AP = prevalence, AUROC 0.5),
    # though three unregistered brains of varied anatomy make a poor voxel-wise reference, and
    # the whole-volume scaling saturates the brightest tenth of each brain at 1 (measured with
    # seed 1: AP 1.54x prevalence and AUROC 0.67; 2.39x and 0.73 with intensity.scaling=brain)
    assert m["pixel"]["ap"] > 1.3 * m["pixel"]["prevalence"]
    assert m["pixel"]["auroc"] > 0.62
    assert m["healthy_heldout"]["0.01"]["n_volumes"] == 1
    assert res.reports["reference"].is_file() and res.comparison.is_file()
    meta = json.loads((root / "b1" / "benchmark.json").read_text())
    assert meta["splits"] == {"train": 3, "val": 1, "test_lesion": 2, "test_healthy": 1,
                              "test_transfer": 1}
    assert "reference" in res.table()
    with pytest.raises(OutputExistsError):
        run_benchmark(["reference"], cache, root / "b1", n_boot=10, progress=False)


def test_benchmark_needs_lesioned_test_scans(cohort_cache):
    root, _, cache = cohort_cache
    with pytest.raises(ConfigError, match="lesion mask"):
        run_benchmark(["reference"], cache, root / "b2", test_split="val", progress=False)


def test_cli_benchmark(cohort_cache, capsys):
    from disyre.cli import main

    root, manifest, _ = cohort_cache
    out = root / "b3"
    assert main(["benchmark", "--manifest", str(manifest), "-o", str(out), "--methods",
                 "reference", "--bootstrap", "5", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "reference" in printed and "comparison:" in printed
    assert (out / "comparison" / "comparison.md").is_file()
    assert main(["benchmark", "--manifest", str(manifest), "-o", str(out), "--methods",
                 "nope"]) == 1
    assert "unknown method" in capsys.readouterr().err


def test_transfer_check_reports_older_brains_and_threshold_spread(cohort_cache):
    import numpy as np

    from disyre.evaluation.baselines import ReferenceModel
    from disyre.inference.windows import median_filter_map

    root, _, cache = cohort_cache
    res = run_benchmark(["reference"], cache, root / "b4", n_boot=20, progress=False)
    m = res.metrics["reference"]
    held, older = m["healthy_heldout"]["0.01"], m["healthy_transfer"]["0.01"]
    assert older["n_volumes"] == 1 and older["threshold"] == held["threshold"]
    # the out-of-range FPR is that of the older-looking scan's map at the 1 % threshold
    ref = ReferenceModel.load(root / "b4" / "reference" / "reference.npz")
    (e,) = [e for e in cache.entries if e.split == "transfer"]
    full = np.zeros(tuple(e.full_shape), np.float32)
    full[e.slices] = np.asarray(e.image())
    brain = np.zeros(tuple(e.full_shape), bool)
    brain[e.slices] = np.asarray(e.mask(), bool)
    crop = ref.predict(full, brain)[e.slices]  # filtered like the learned methods' maps
    scores = median_filter_map(crop, crop_brain := brain[e.slices], 3)[crop_brain]
    assert older["fpr"] == pytest.approx((scores > older["threshold"]).mean(), abs=1e-9)
    assert 0 < older["fpr"] < 1
    # the threshold's spread over resamples of the validation scans, and the FPRs it gives
    boot = m["threshold_bootstrap"]["0.01"]
    assert boot["threshold_ci"][0] <= held["threshold"] <= boot["threshold_ci"][1]
    assert boot["transfer_fpr_ci"][0] <= older["fpr"] <= boot["transfer_fpr_ci"][1]
    row = res.rows()[0]
    assert row["transfer_fpr_at_1pct"] == older["fpr"]
    assert "older FPR@1%" in res.table()
    report = res.reports["reference"].read_text()
    assert "out-of-range healthy FPR" in report and "bootstrap resamples" in report
    assert "out-of-range FPR @ 1%" in res.comparison.read_text()


def test_evaluate_run_reevaluates_a_trained_run_with_other_inference_settings(cohort_cache,
                                                                               tiny_run):
    from disyre.benchmark import evaluate_run
    from disyre.evaluation.metrics import paired_bootstrap_ap

    _root, _, cache = cohort_cache
    plain, extra = evaluate_run(tiny_run.path, cache, inference={"median_filter": 0}, n_boot=20,
                                device="cpu", progress=False)
    filt, _ = evaluate_run(tiny_run.path, cache, inference={"median_filter": 3}, n_boot=20,
                           device="cpu", progress=False)
    assert plain.to_dict()["post_processing"]["median_filter"] == 0
    assert filt.to_dict()["post_processing"]["median_filter"] == 3
    assert filt.to_dict()["post_processing"]["protocol"] == "published"  # DISYRE's: shared
    assert plain.thresholds is not None and "healthy_transfer" in extra
    assert filt.pixel.ap != plain.pixel.ap  # the filter reached the maps
    n_lesioned = sum(c.n_lesion > 0 for c in plain.cases)
    assert plain.volume_pos_hist.shape[0] == n_lesioned == 2  # the pixel metrics: lesioned
    r = paired_bootstrap_ap(plain.volume_pos_hist, plain.volume_neg_hist,
                            filt.volume_pos_hist, filt.volume_neg_hist, n_boot=20)
    assert r["diff_low"] <= r["diff"] <= r["diff_high"]


def test_evaluate_run_reevaluates_the_reference_as_the_benchmark_did(cohort_cache):
    from disyre.benchmark import evaluate_run

    root, _, cache = cohort_cache
    res = run_benchmark(["reference"], cache, root / "b5", n_boot=10, progress=False)
    ref = root / "b5" / "reference" / "reference.npz"
    again, extra = evaluate_run(ref, cache, inference={"median_filter": 3}, n_boot=10,
                                progress=False)
    m = res.metrics["reference"]
    assert again.pixel.ap == pytest.approx(m["pixel"]["ap"], abs=1e-12)
    assert extra["healthy_transfer"]["0.01"]["fpr"] == m["healthy_transfer"]["0.01"]["fpr"]
    plain, _ = evaluate_run(ref, cache, inference={"median_filter": 0}, n_boot=10,
                            progress=False)
    assert plain.pixel.ap != again.pixel.ap  # the setting reached the reference's maps


def test_larger_test_set_extends_the_cohort_and_evaluates_the_benchmark(cohort_cache):
    from benchmarks.experiments.larger_test_set import larger_cohort, measure, table

    root, _, cache = cohort_cache
    run_benchmark(["reference"], cache, root / "b6", n_boot=10, progress=False)
    out = root / "t3"
    result = measure(root / "b6", root / "cohort", out, 3, n_boot=10)
    (row,) = result["rows"]
    assert row["method"] == "reference" and row["n_lesioned"] == 3
    assert row["n_scans"] == 1 + 1 + 1 + 3  # val, healthy test, older healthy, lesioned
    assert 0 < row["ap"] <= 1 and "| reference | " in table(result)
    meta = json.loads((out / "cohort" / "cohort.json").read_text())
    assert [r["lesion_kind"] for r in meta["rows"] if r["lesion_kind"]] == [
        "tumour", "stroke", "tumour"]
    with pytest.raises(SystemExit, match="already has 2"):
        larger_cohort(root / "cohort", root / "t1", 1)
    # an original subject that the larger cohort does not reproduce is named
    import nibabel as nib
    import numpy as np

    img = out / "cohort" / "images" / "demo-000.nii.gz"
    nii = nib.load(img)
    nib.save(nib.Nifti1Image(np.asarray(nii.dataobj) + 1, nii.affine), img)
    with pytest.raises(SystemExit, match="demo-000.nii.gz: differs from"):
        larger_cohort(root / "cohort", out / "cohort", 3)


# --------------------------------------------------------------------------------------------
# each method to its plateau; the checkpoints kept at --eval-steps
# --------------------------------------------------------------------------------------------


def _plateau_config():
    from tests.helpers import tiny_config

    cfg = tiny_config(steps=40, lr=3e-3, val_every=2, ckpt_every=1000)
    cfg.sampler.n_volumes = 2  # the quick demo's tiny settings: whole slices, 32-px patches
    cfg.inference.window = 0
    return cfg


def test_benchmark_stops_at_the_plateau_and_evaluates_exactly_the_kept_steps(cohort_cache,
                                                                              monkeypatch):
    import disyre.benchmark as bench

    root, _, cache = cohort_cache
    mapped: list[str] = []
    real = bench._Mapper

    class Spy(real):
        def __init__(self, name, *, run_dir=None, **kw):
            mapped.append(str(run_dir))
            super().__init__(name, run_dir=run_dir, **kw)

    monkeypatch.setattr(bench, "_Mapper", Spy)
    out = root / "plateau"
    # an improvement must be 90 % below the best loss: the rule stops at the third validation
    res = run_benchmark(["dae"], cache, out, cfg=_plateau_config(), patience=2, min_delta=0.9,
                        eval_steps="2,4,30", n_boot=0, progress=False)
    meta = json.loads((out / "benchmark.json").read_text())
    stop = meta["stopping"]["dae"]
    assert (stop["step"], stop["reason"]) == (6, "plateau")
    assert [s for s, _ in stop["curve"]] == [2, 4, 6] and stop["best"]["step"] == 2
    assert all(v > 0 for _, v in stop["curve"])
    assert (meta["patience"], meta["min_delta"], meta["eval_steps"]) == (2, 0.9, [2, 4, 30])
    run = out / "dae" / "run"
    # the final model, then the kept steps the run reached, nothing else
    assert mapped == [str(run), str(run / "checkpoints" / "step_0000002"),
                      str(run / "checkpoints" / "step_0000004")]
    ap = meta["budget"]["dae"]
    assert set(ap) == {"2", "4", "30"} and ap["30"] is None  # stopped at 6: never reached 30
    assert 0 < ap["2"] <= 1 and 0 < ap["4"] <= 1 and ap["2"] != ap["4"]
    md = res.comparison.read_text()
    assert "| dae | 6 | plateau |" in md and "![validation loss](figures/validation_loss.png)" in md
    assert "\n\n## Training: where each method stopped\n" in md  # its heading stands apart
    assert "| step 2 | step 4 | step 30 |" in md
    for fig in ("validation_loss.png", "ap_by_step.png"):
        assert (out / "comparison" / "figures" / fig).stat().st_size > 1000
    # the same kept checkpoints evaluated outside the benchmark (an interrupted run's way)
    from benchmarks.experiments import kept_steps

    monkeypatch.setattr(bench, "_Mapper", real)
    again = kept_steps.measure(run, cache.directory, [2, 4, 30], device="cpu")
    assert again["method"] == "dae" and again["ap"] == ap
    with pytest.raises(SystemExit, match="--steps 2,2: "):
        kept_steps.main(["--run", str(run), "--cache", str(cache.directory), "--steps", "2,2"])


@pytest.mark.parametrize(("args", "message"), [
    (["--patience", "-1"], "--patience must be >= 0"),
    (["--min-delta", "0.1"], "--min-delta needs --patience"),
    (["--patience", "2", "--min-delta", "1.5"], "--min-delta must be in [0, 1)"),
    (["--eval-steps", "10,x"], "--eval-steps must be steps >= 1 separated by commas, got 'x'"),
    (["--eval-steps", "10,10"], "--eval-steps lists step 10 twice"),
    (["--steps", "20", "--eval-steps", "10,30"], "--eval-steps [30] lie beyond the training cap"),
])
def test_benchmark_plateau_arguments_are_refused_in_one_line(tmp_path, capsys, args, message):
    from disyre.cli import main

    manifest = tmp_path / "m.csv"
    manifest.write_text("subject,image,lesion_mask,brain_mask,split,contrast\n")
    assert main(["benchmark", "--manifest", str(manifest), "-o", str(tmp_path / "b"),
                 "--methods", "dae", *args]) == 1
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "b").exists()


def test_stop_record_without_patience_reads_the_log_and_the_newest_checkpoint(tmp_path):
    from disyre.benchmark import stop_record

    run = tmp_path / "run"
    (run / "checkpoints" / "step_0000012").mkdir(parents=True)
    (run / "checkpoints" / "step_0000012" / "config.json").write_text("{}")
    (run / "train_log.csv").write_text(
        "step,loss,lr,patches_per_s,val_loss,val_loss_ema\n"
        "1,0.9,0.001,10,,\n4,0.5,0.001,10,0.6,0.62\n8,0.4,0.001,10,0.5,0.55\n"
        "12,0.3,0.001,10,0.55,0.57\n")
    rec = stop_record(run)
    # the EMA network's losses (the weights detection uses), the run's last step, the cap
    assert rec["monitor"] == "val_loss_ema" and rec["curve"] == [[4, 0.62], [8, 0.55],
                                                                   [12, 0.57]]
    assert (rec["step"], rec["reason"], rec["best"]) == (12, "cap", {"step": 8, "loss": 0.55})


def test_combine_benchmarks_joins_folders_of_one_cohort_and_refuses_others(cohort_cache,
                                                                           tmp_path):
    """One benchmark per method, combined: the rows of each, the budget figure; a folder
    with another seed or a repeated method is refused in one line."""
    from benchmarks.experiments import combine_benchmarks as cb
    from tests.helpers import tiny_config

    root, _, cache = cohort_cache
    cfg = tiny_config(steps=4, val_every=2)
    cfg.inference.window = 0
    run_benchmark(["reference"], cache, tmp_path / "ref", cfg=cfg, n_boot=5, progress=False)
    run_benchmark(["dae"], cache, tmp_path / "dae", cfg=cfg, n_boot=5, device="cpu",
                  progress=False, patience=3, eval_steps="2", post_processing="published")
    md = tmp_path / "all_md"
    assert cb.main(["--bench", str(tmp_path / "dae"), str(tmp_path / "ref"),
                    "--figures", str(tmp_path / "fig"), "--markdown", str(md)]) == 0
    text = md.read_text()
    dae = json.loads((tmp_path / "dae" / "benchmark.json").read_text())
    ap = dae["summary"][0]["pixel_ap"]
    assert f"| dae | 4 (cap) | {ap:.3f} [" in text and "| reference | - |" in text
    assert "](fig/ap_by_step.png)" in text and (tmp_path / "fig" / "ap_by_step.png").is_file()
    with pytest.raises(SystemExit, match="--markdown .*exists"):
        cb.main(["--bench", str(tmp_path / "dae"), "--figures", str(tmp_path / "f2"),
                 "--markdown", str(md)])
    # a run stopped before its benchmark finished: its kept steps join the budget figure
    from benchmarks.experiments import kept_steps

    kept = tmp_path / "dae_kept.json"
    assert kept_steps.main(["--run", str(tmp_path / "dae" / "dae" / "run"), "--cache",
                            str(cache.directory), "--steps", "2", "--device", "cpu",
                            "--json", str(kept)]) == 0
    with pytest.raises(SystemExit, match="method dae is already in the comparison"):
        cb.combine([tmp_path / "dae"], tmp_path / "fig3", None, [kept])
    text = cb.combine([tmp_path / "ref"], tmp_path / "fig3", None, [kept])
    assert "*dae: stopped at step 4 before its benchmark finished" in text
    assert "| dae | 4 | interrupted |" in text and (tmp_path / "fig3" / "ap_by_step.png").is_file()
    with pytest.raises(SystemExit, match="method reference is also in"):
        cb.load([tmp_path / "ref", tmp_path / "ref"])
    run_benchmark(["reference"], cache, tmp_path / "ref1", cfg=cfg, n_boot=5, seed=1,
                  progress=False)
    with pytest.raises(SystemExit, match="ref1: differs from .* in seed"):
        cb.load([tmp_path / "ref", tmp_path / "ref1"])


def test_benchmark_resume_keeps_finished_runs_and_continues_interrupted_ones(cohort_cache,
                                                                             tmp_path,
                                                                             monkeypatch):
    """--resume: a finished method is not trained again; an interrupted one continues from
    its newest checkpoint; the evaluations are made again."""
    import disyre.training as training
    from tests.helpers import tiny_config

    _root, _, cache = cohort_cache
    cfg = tiny_config(steps=4, val_every=2, ckpt_every=2)
    cfg.inference.window = 0
    out = tmp_path / "b"
    first = run_benchmark(["dae", "reference"], cache, out, cfg=cfg, n_boot=0, device="cpu",
                          progress=False, post_processing="published")
    with pytest.raises(OutputExistsError):
        run_benchmark(["dae"], cache, out, cfg=cfg, n_boot=0, progress=False)
    calls: list[dict] = []
    real = training.train

    def spy(*a, **k):
        calls.append(k)
        return real(*a, **k)

    monkeypatch.setattr(training, "train", spy)
    again = run_benchmark(["dae", "reference"], cache, out, cfg=cfg, n_boot=0, device="cpu",
                          progress=False, post_processing="published", resume=True)
    assert calls == []  # finished: not trained again
    assert again.metrics["dae"]["pixel"]["ap"] == first.metrics["dae"]["pixel"]["ap"]
    meta = json.loads((out / "benchmark.json").read_text())
    recorded = json.loads((out / "dae" / "run" / "run.json").read_text())["wall_s"]
    assert meta["timings"]["dae"]["train_s"] == recorded > 0  # its own training, not 0
    assert meta["resumed"] == ["dae"]
    # the run killed after its step-2 checkpoint: its record says training, its process gone
    run = out / "dae" / "run"
    import shutil

    shutil.rmtree(run / "checkpoints" / "step_0000004")
    doc = json.loads((run / "run.json").read_text())
    doc.update(status="training", pid=2**22 + 7, host=__import__("socket").gethostname(),
               process_start=None)
    (run / "run.json").write_text(json.dumps(doc))
    res = run_benchmark(["dae", "reference"], cache, out, cfg=cfg, n_boot=0, device="cpu",
                        progress=False, post_processing="published", resume=True)
    assert [k.get("resume") for k in calls] == [True]
    assert (run / "checkpoints" / "step_0000004").is_dir()  # continued to the cap
    assert json.loads((run / "run.json").read_text())["status"] == "done"
    assert json.loads((out / "benchmark.json").read_text())["resumed"] == ["dae"]
    assert 0 < res.metrics["dae"]["pixel"]["ap"] <= 1
