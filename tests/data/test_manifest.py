"""Manifests and dataset-layout builders (disyre.data.manifest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from disyre.data.manifest import (
    COLUMNS,
    ManifestRow,
    assign_splits,
    build_manifest,
    from_atlas,
    from_brats,
    from_camcan,
    from_folder,
    from_ixi,
    read_manifest,
    write_manifest,
)
from disyre.data.nifti import InputError
from disyre.io_utils import OutputExistsError

TINY = np.ones((8, 8, 8), np.float32)


def test_columns_match_row_fields():
    from dataclasses import fields

    assert tuple(f.name for f in fields(ManifestRow)) == COLUMNS


def test_write_read_round_trip_with_relative_paths(write_nifti, tmp_path):
    a, b = write_nifti("imgs/a.nii.gz", TINY), write_nifti("imgs/b.nii.gz", TINY)
    m = write_nifti("imgs/b_seg.nii.gz", TINY)
    rows = [ManifestRow("a", a, split="train", contrast="t1"),
            ManifestRow("b", b, lesion_mask=m, split="test", contrast="t1",
                        binarize_lesion=True)]
    out = tmp_path / "m.csv"
    write_manifest(rows, out)
    assert read_manifest(out) == [ManifestRow(r.subject, r.image.resolve(),
                                              r.lesion_mask.resolve() if r.lesion_mask else None,
                                              None, r.split, r.contrast, r.binarize_lesion)
                                  for r in rows]
    with pytest.raises(OutputExistsError, match=r"m\.csv: manifest already exists"):
        write_manifest(rows, out)
    # relative paths are resolved against the manifest's folder
    rel = tmp_path / "imgs" / "rel.csv"
    rel.write_text("subject,image,split\nx,a.nii.gz,val\n")
    (row,) = read_manifest(rel)
    assert row.image == tmp_path / "imgs" / "a.nii.gz" and row.split == "val"


def test_bad_manifests_name_the_file_and_row(write_nifti, tmp_path):
    write_nifti("a.nii.gz", TINY)
    cases = {
        "empty.csv": ("subject,image,lesion_mask,brain_mask,split,contrast\n",
                      r"empty\.csv: manifest is empty"),
        "blank.csv": ("", r"blank\.csv: manifest is empty"),
        "dup.csv": ("subject,image\ns1,a.nii.gz\ns2,a.nii.gz\ns1,a.nii.gz\n",
                    r"dup\.csv: line 4 \(subject 's1'\): duplicate subject id, first used on "
                    r"line 2"),
        "missing.csv": ("subject,image\ns1,a.nii.gz\ns2,gone.nii.gz\n",
                        r"missing\.csv: line 3 \(subject 's2'\): image file not found"),
        "cols.csv": ("subj,img\ns1,a.nii.gz\n", r"cols\.csv: manifest lacks column"),
        "extra.csv": ("subject,image,age\ns1,a.nii.gz,3\n", r"extra\.csv: unknown manifest"),
    }
    for name, (text, msg) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=msg):
            read_manifest(tmp_path / name)
    with pytest.raises(InputError, match=r"nothere\.csv: manifest file not found"):
        read_manifest(tmp_path / "nothere.csv")
    with pytest.raises(InputError, match="manifest is empty"):
        write_manifest([], tmp_path / "new.csv")
    assert not (tmp_path / "new.csv").exists()


def test_assign_splits_is_deterministic_and_order_free():
    rows = [ManifestRow(f"s{i:02d}", f"/x/s{i}.nii.gz") for i in range(20)]
    a = assign_splits(rows, 0.25, seed=3)
    b = assign_splits(rows[::-1], 0.25, seed=3)
    val_a = {r.subject for r in a if r.split == "val"}
    assert len(val_a) == 5 and val_a == {r.subject for r in b if r.split == "val"}
    assert val_a != {r.subject for r in assign_splits(rows, 0.25, seed=4) if r.split == "val"}
    assert [r.subject for r in a] == [r.subject for r in rows]


def test_folder_builder(write_nifti, tmp_path):
    write_nifti("scans/x1.nii.gz", TINY)
    write_nifti("scans/x2.nii", TINY)
    write_nifti("scans/sub/x1.nii.gz", TINY)
    (tmp_path / "scans" / "readme.txt").write_text("not a scan")
    rows = from_folder(tmp_path / "scans", "*.nii*", contrast="t2")
    assert [r.subject for r in rows] == ["x1", "x2"] and rows[0].contrast == "t2"
    rows = from_folder(tmp_path / "scans", "**/*.nii.gz")
    assert sorted(r.subject for r in rows) == ["sub_x1", "x1"]
    with pytest.raises(InputError, match=r"scans: no NIfTI files matching '\*\.mgz'"):
        from_folder(tmp_path / "scans", "*.mgz")
    with pytest.raises(InputError, match=r"absent: dataset folder not found"):
        from_folder(tmp_path / "absent")


def test_brats_builder(write_nifti, tmp_path):
    root = tmp_path / "MICCAI_BraTS2020_TrainingData"
    for case in ("BraTS20_Training_001", "BraTS20_Training_002"):
        for c in ("t1", "t1ce", "t2", "flair", "seg"):
            write_nifti(root / case / f"{case}_{c}.nii.gz", TINY)
    write_nifti(root / "BraTS20_Training_003" / "BraTS20_Training_003_t2.nii.gz", TINY)
    rows = from_brats(root, contrast="t2")
    assert [r.subject for r in rows] == [f"BraTS20_Training_00{i}" for i in (1, 2, 3)]
    r = rows[0]
    assert r.image == root / r.subject / f"{r.subject}_t2.nii.gz"
    assert r.lesion_mask == root / r.subject / f"{r.subject}_seg.nii.gz"
    assert r.binarize_lesion and r.split == "test" and r.contrast == "t2"
    assert rows[2].lesion_mask is None and not rows[2].binarize_lesion
    assert from_brats(root, contrast="flair")[0].image.name.endswith("_flair.nii.gz")
    with pytest.raises(ValueError, match="BraTS contrast"):
        from_brats(root, contrast="pd")


def test_atlas_builder_with_site_folders(write_nifti, tmp_path):
    root = tmp_path / "ATLAS_2" / "Training"
    stem = "space-MNI152NLin2009aSym"
    for site, sub in (("R001", "r001s001"), ("R001", "r001s002"), ("R052", "r052s010")):
        anat = root / site / f"sub-{sub}" / "ses-1" / "anat"
        write_nifti(anat / f"sub-{sub}_ses-1_{stem}_T1w.nii.gz", TINY)
        write_nifti(anat / f"sub-{sub}_ses-1_{stem}_label-L_desc-T1lesion_mask.nii.gz", TINY)
    rows = from_atlas(tmp_path / "ATLAS_2")
    assert [r.subject for r in rows] == ["sub-r001s001_ses-1", "sub-r001s002_ses-1",
                                         "sub-r052s010_ses-1"]
    assert all(r.lesion_mask is not None and r.lesion_mask.name.endswith(
        "_label-L_desc-T1lesion_mask.nii.gz") for r in rows)
    assert all(r.split == "test" and r.contrast == "t1" and not r.binarize_lesion for r in rows)


def test_camcan_builder(write_nifti, tmp_path):
    root = tmp_path / "cc700" / "BIDS"
    for s in ("CC110033", "CC110037", "CC110045", "CC110056"):
        for c in ("T1w", "T2w"):
            write_nifti(root / f"sub-{s}" / "anat" / f"sub-{s}_{c}.nii.gz", TINY)
    rows = from_camcan(tmp_path, contrast="t2", val_fraction=0.25, seed=0)
    assert [r.subject for r in rows] == ["sub-CC110033", "sub-CC110037", "sub-CC110045",
                                         "sub-CC110056"]
    assert all(r.image.name.endswith("_T2w.nii.gz") for r in rows)
    assert sorted(r.split for r in rows) == ["train", "train", "train", "val"]
    assert from_camcan(tmp_path, contrast="t1")[0].image.name == "sub-CC110033_T1w.nii.gz"


def test_ixi_builder(write_nifti, tmp_path):
    for s in ("IXI002-Guys-0828", "IXI012-HH-1211"):
        for c in ("T1", "T2", "PD"):
            write_nifti(f"IXI-{c}/{s}-{c}.nii.gz", TINY)
    rows = from_ixi(tmp_path, contrast="t1")
    assert [r.subject for r in rows] == ["IXI002-Guys-0828", "IXI012-HH-1211"]
    assert all(r.image.name.endswith("-T1.nii.gz") and r.split == "train" for r in rows)
    assert build_manifest("ixi", tmp_path, contrast="pd", split=None)[1].image.name == (
        "IXI012-HH-1211-PD.nii.gz")
    with pytest.raises(InputError, match=r"no IXI scans"):
        from_ixi(tmp_path / "IXI-T1", contrast="t2")
    with pytest.raises(ValueError, match="unknown layout"):
        build_manifest("oasis", tmp_path)


def test_builders_write_valid_manifests(write_nifti, tmp_path):
    write_nifti("d/a.nii.gz", TINY)
    out = tmp_path / "m.csv"
    write_manifest(from_folder(tmp_path / "d"), out)
    header = out.read_text().splitlines()[0]
    assert header == ",".join(COLUMNS)
    assert Path(read_manifest(out)[0].image).is_absolute()


def test_write_relative_manifest_moves_with_its_folder(write_nifti, tmp_path, monkeypatch):
    a = write_nifti("cohort/images/a.nii.gz", TINY)
    seg = write_nifti("cohort/labels/a_seg.nii.gz", TINY)
    out = tmp_path / "cohort" / "manifest.csv"
    # a row's relative path is relative to the current folder, as read_manifest returns it
    monkeypatch.chdir(tmp_path)
    write_manifest([ManifestRow("a", Path("cohort/images/a.nii.gz"), lesion_mask=seg,
                                split="test")], out)
    assert str(tmp_path) not in out.read_text()
    assert ",images/a.nii.gz,labels/a_seg.nii.gz," in out.read_text()
    moved = tmp_path / "moved"
    (tmp_path / "cohort").rename(moved)
    (row,) = read_manifest(moved / "manifest.csv")
    assert row.image == moved / "images" / "a.nii.gz" and row.image.is_file()
    assert row.lesion_mask == moved / "labels" / "a_seg.nii.gz"
    assert a.name == row.image.name


def test_paths_written_from_one_folder_read_from_another(write_nifti, tmp_path, monkeypatch):
    """``disyre preprocess -o prep/`` then ``train --manifest prep/manifest.csv``: the writer
    gets paths relative to the current folder, the CSV holds them relative to its own folder
    (files outside it: absolute), and any reader, from any folder, finds the files."""
    write_nifti("work/prep/s1/s1.nii.gz", TINY)
    write_nifti("work/prep/s1/s1_mask.nii.gz", TINY)
    outside = write_nifti("data/s2.nii.gz", TINY)
    monkeypatch.chdir(tmp_path / "work")
    write_manifest([ManifestRow("s1", Path("prep/s1/s1.nii.gz"),
                                brain_mask=Path("prep/s1/s1_mask.nii.gz")),
                    ManifestRow("s2", Path("../data/s2.nii.gz"))], Path("prep/manifest.csv"))
    lines = (tmp_path / "work" / "prep" / "manifest.csv").read_text().splitlines()
    assert lines[1].startswith("s1,s1/s1.nii.gz,,s1/s1_mask.nii.gz,")
    assert lines[2].startswith(f"s2,{outside},")
    for cwd, manifest in ((tmp_path / "work", Path("prep/manifest.csv")),
                          (tmp_path / "work" / "prep", Path("manifest.csv")),
                          (tmp_path, tmp_path / "work" / "prep" / "manifest.csv")):
        monkeypatch.chdir(cwd)
        s1, s2 = read_manifest(manifest)
        assert s1.image.resolve() == tmp_path / "work" / "prep" / "s1" / "s1.nii.gz"
        assert s1.brain_mask.resolve() == tmp_path / "work" / "prep" / "s1" / "s1_mask.nii.gz"
        assert s2.image == outside


def test_manifest_with_paths_relative_to_the_current_folder(write_nifti, tmp_path,
                                                            monkeypatch, caplog):
    """A manifest written by an older ``disyre preprocess`` (paths relative to the folder it
    ran from): read from that folder it works, with a warning naming the manifest; from
    elsewhere the error names the manifest, its line and the path tried."""
    write_nifti("work/prep/s1/s1.nii.gz", TINY)
    old = tmp_path / "work" / "prep" / "manifest.csv"
    old.write_text("subject,image\ns1,prep/s1/s1.nii.gz\n")
    monkeypatch.chdir(tmp_path / "work")
    with caplog.at_level("WARNING", logger="disyre.data.manifest"):
        (row,) = read_manifest("prep/manifest.csv")
    assert row.image == Path("prep/s1/s1.nii.gz") and row.image.is_file()
    assert "prep/manifest.csv: 1 path(s) (e.g. prep/s1/s1.nii.gz) name no file relative to " \
           "the manifest's folder" in caplog.text
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"manifest\.csv: line 2 \(subject 's1'\): image file "
                       r"not found: .*work/prep/prep/s1/s1\.nii\.gz"):
        read_manifest(old)
    # rewriting it makes it a proper one, readable from anywhere
    monkeypatch.chdir(tmp_path / "work")
    write_manifest(read_manifest("prep/manifest.csv"), "prep/manifest.csv", overwrite=True)
    monkeypatch.chdir(tmp_path)
    assert read_manifest(old)[0].image.resolve() == tmp_path / "work/prep/s1/s1.nii.gz"


def test_broken_symbolic_links_are_named_not_passed_over(write_nifti, tmp_path, caplog):
    write_nifti("d/a.nii.gz", TINY)
    (tmp_path / "d" / "b.nii.gz").symlink_to(tmp_path / "gone" / "b.nii.gz")
    with caplog.at_level("WARNING", logger="disyre.data.nifti"):
        rows = from_folder(tmp_path / "d")
    assert [r.subject for r in rows] == ["a"]
    assert f"b.nii.gz: broken symbolic link (its target {tmp_path}/gone/b.nii.gz does not " \
           "exist); skipped" in caplog.text
    (tmp_path / "m.csv").write_text("subject,image\nb,d/b.nii.gz\n")
    with pytest.raises(InputError, match=r"line 2 \(subject 'b'\): image file not found"):
        read_manifest(tmp_path / "m.csv")
