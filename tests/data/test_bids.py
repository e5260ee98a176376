"""``--layout bids``: the BIDS reader (data/bids.py) and the manifest it builds."""

from __future__ import annotations

import logging
import shutil

import pytest

from disyre.cli import main
from disyre.data.bids import derivative_problems, find_scans, name_problem, parse_name
from disyre.data.manifest import from_bids, read_manifest
from disyre.data.nifti import InputError
from tests.helpers.bids import BRAIN, LESIONS, T1W, T2W, write_bids_dataset


@pytest.fixture()
def ds(tmp_path):
    return write_bids_dataset(tmp_path / "ds")


def test_parse_and_rebuild_names():
    n = parse_name("sub-01_ses-1_acq-fast_run-2_T2w.nii.gz")
    assert n.entities == {"sub": "01", "ses": "1", "acq": "fast", "run": "2"}
    # entities come back in the schema's order whatever the order they were added in
    assert n.with_(desc="restored", space="T2w").filename == (
        "sub-01_ses-1_acq-fast_run-2_space-T2w_desc-restored_T2w.nii.gz")
    assert parse_name("sub-01_T2w_copy.nii.gz") is None
    assert parse_name("sub-01_acq-a_acq-b_T2w.nii") is None


def test_prepare_bids_finds_the_expected_scans_and_splits(ds, tmp_path, capsys):
    out = tmp_path / "prep"
    assert main(["prepare", "--layout", "bids", "--root", str(ds), "--suffix", "T2w",
                 "--healthy", "group=control", "-o", str(out), "--no-cache"]) == 0
    rows = {r.subject: r for r in read_manifest(out / "manifest.csv")}
    assert sorted(rows) == ["sub-01_ses-1", "sub-01_ses-2", "sub-02_ses-1",
                            "sub-02_ses-1_acq-fast", "sub-02_ses-2", "sub-03_ses-1"]
    by_path = {r.image.resolve(): r for r in rows.values()}
    assert set(by_path) == {(ds / p).resolve() for p in T2W}
    for rel, r in ((rel, by_path[(ds / rel).resolve()]) for rel in T2W):
        assert r.split == ("test" if "sub-02" in rel else "train"), rel
        assert r.contrast == "t2"
        want = LESIONS.get(rel)
        assert (r.lesion_mask.resolve() if r.lesion_mask else None) == (
            (ds / want).resolve() if want else None), rel
        want = BRAIN.get(rel)
        assert (r.brain_mask.resolve() if r.brain_mask else None) == (
            (ds / want).resolve() if want else None), rel
        want = T1W.get(rel)
        assert (r.t1.resolve() if r.t1 else None) == ((ds / want).resolve() if want else None)


def test_bids_filters_and_val_fraction(ds):
    rows = from_bids(ds, "T2w", participant_label=["sub-02", "03"], session_label=["1"])
    assert [r.subject for r in rows] == ["sub-02_ses-1", "sub-02_ses-1_acq-fast",
                                         "sub-03_ses-1"]
    rows = from_bids(ds, "T2w", healthy="group=control", val_fraction=0.34, seed=0)
    splits = sorted(r.split for r in rows)
    assert splits == ["test"] * 3 + ["train"] * 2 + ["val"]  # val drawn from the controls
    assert all(r.split == "test" for r in rows if r.subject.startswith("sub-02"))
    assert [r.subject for r in from_bids(ds, "T1w")] == ["sub-01_ses-1"]
    with pytest.raises(InputError, match="participant label.*04"):
        from_bids(ds, "T2w", participant_label=["04"])
    with pytest.raises(InputError, match=r"participants.tsv: no column 'diagnosis'"):
        from_bids(ds, "T2w", healthy="diagnosis=hc")
    with pytest.raises(InputError, match="COLUMN=VALUE"):
        from_bids(ds, "T2w", healthy="control")


def test_malformed_datasets_are_named_in_one_line(ds, tmp_path, caplog, capsys):
    # a file breaking the naming: warned about (naming it) and skipped
    bad = ds / "sub-03" / "ses-1" / "anat" / "sub-03_ses-1_T2w_copy.nii.gz"
    shutil.copy(ds / "sub-03/ses-1/anat/sub-03_ses-1_T2w.nii.gz", bad)
    moved = ds / "sub-03" / "ses-1" / "anat" / "sub-01_ses-1_T2w.nii.gz"
    shutil.copy(ds / "sub-03/ses-1/anat/sub-03_ses-1_T2w.nii.gz", moved)
    # an empty anat folder: warned about
    empty = ds / "sub-04" / "anat"
    empty.mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        listing = find_scans(ds, "T2w")
    assert len(listing.scans) == len(T2W)
    assert any(str(bad) in w and "not a valid BIDS file name" in w for w in listing.warnings)
    assert any(str(moved) in w and "sub-03" in w for w in listing.warnings)
    assert any(str(empty) in w and "empty anat folder" in w for w in listing.warnings)
    assert all("\n" not in w for w in listing.warnings) and len(listing.warnings) == 3
    assert str(bad) in caplog.text
    # missing dataset_description.json: a one-line error naming the folder
    (ds / "dataset_description.json").unlink()
    capsys.readouterr()
    assert main(["prepare", "--layout", "bids", "--root", str(ds), "--suffix", "T2w",
                 "-o", str(tmp_path / "p"), "--no-cache"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(ds) in err and "dataset_description.json" in err


def test_name_rules_of_the_schema():
    assert name_problem("sub-01/ses-1/anat/sub-01_ses-1_acq-fast_T2w.nii.gz") is None
    # label- belongs to masks and segmentations, not to images
    assert name_problem("sub-01/anat/sub-01_label-anomaly_T2w.nii.gz", derivative=True)
    assert name_problem("sub-01/anat/sub-01_desc-restored_T2w.nii.gz", derivative=True) is None
    assert name_problem("sub-01/anat/sub-01_label-anomaly_desc-fpr0.5_mask.nii.gz",
                        derivative=True) is not None


def test_derivative_problems_check_the_description(tmp_path):
    d = tmp_path / "deriv"
    (d / "sub-01" / "anat").mkdir(parents=True)
    (d / "sub-01" / "anat" / "sub-01_space-T2w_label-anomaly_probseg.nii.gz").touch()
    assert derivative_problems(d) == [f"{d / 'dataset_description.json'}: missing"]
    (d / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.10.0", '
                                                 '"DatasetType": "raw", "GeneratedBy": []}')
    problems = derivative_problems(d)
    assert len(problems) == 2 and "not 'derivative'" in problems[0]
    assert "GeneratedBy" in problems[1]


def test_prepare_bids_flags_are_checked(ds, tmp_path, capsys):
    base = ["prepare", "--root", str(ds), "-o", str(tmp_path / "p"), "--no-cache"]
    for argv, words in (
            (["--layout", "camcan", "--suffix", "T2w"], "--suffix applies to --layout bids"),
            (["--layout", "bids"], "--layout bids needs --suffix"),
            (["--layout", "bids", "--suffix", "T2w", "--healthy", "group=control", "--split",
              "test"], "--healthy sets the splits")):
        assert main([*base, *argv]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "p").exists()
