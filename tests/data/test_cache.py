"""Normalised-volume cache (disyre.data.cache)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from disyre.config import IntensityConfig
from disyre.data.cache import INDEX_NAME, VolumeCache, prepare_cache
from disyre.data.intensity import normalize
from disyre.data.manifest import ManifestRow
from disyre.data.nifti import InputError, load_scan


@pytest.fixture
def rows(write_nifti, brain_volume):
    out = []
    for i, split in enumerate(["train", "train", "val", "test"]):
        vol = brain_volume((10 + i, 12, 9), seed=i)
        img = write_nifti(f"ds/s{i}.nii.gz", vol)
        les = None
        if split == "test":
            lab = np.zeros(vol.shape, np.uint8)
            lab[4:7, 5:8, 3:6] = 2
            les = write_nifti("ds/s3_seg.nii.gz", lab)
        out.append(ManifestRow(f"s{i}", img, lesion_mask=les, split=split, contrast="t1",
                               binarize_lesion=les is not None))
    return out


def test_cache_contents_match_preprocessing(rows, tmp_path):
    cache = prepare_cache(rows, tmp_path / "cache")
    assert (cache.processed, cache.reused, len(cache)) == (4, 0, 4)
    assert cache.subjects("train") == ["s0", "s1"] and cache.subjects("test") == ["s3"]
    vols = cache.volumes("train")
    assert all(isinstance(v, np.memmap) and v.dtype == np.float32 for v in vols)
    ref = normalize(load_scan(rows[1].image).data)
    np.testing.assert_array_equal(vols[1], ref.image)
    e = cache.select("train")[1]
    assert e.slices == ref.bbox and e.full_shape == ref.full_shape
    np.testing.assert_array_equal(e.mask(), ref.mask)
    (lesion,) = cache.lesions("test")
    assert lesion.dtype == bool and lesion.shape == cache.volumes("test")[0].shape
    assert lesion.sum() == 27  # labels 2 binarised, crop keeps the whole lesion
    assert cache.lesions("train") == [None, None]
    index = json.loads((tmp_path / "cache" / INDEX_NAME).read_text())
    ent = index["entries"]["s0"]
    assert ent["intensity"] == {"scaling": "whole_volume", "lower_percentile": 0.0,
                                 "upper_percentile": 98.0, "reference_volume_ml": 8928.0,
                                 "crop_margin": 0, "nan_policy": "zero"}
    assert set(ent["inputs"]["image"]) == {"path", "size", "mtime_ns", "sha1"}
    reopened = VolumeCache.open(tmp_path / "cache")
    assert sorted(reopened.subjects()) == ["s0", "s1", "s2", "s3"]


def test_unchanged_inputs_are_reused_and_touched_files_redone(rows, tmp_path, monkeypatch):
    prepare_cache(rows, tmp_path / "cache")
    npys = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.npy")}

    def no_loading(*a, **k):
        raise AssertionError("a cached subject was loaded again")

    with monkeypatch.context() as m:
        m.setattr("disyre.data.cache.load_scan", no_loading)
        again = prepare_cache(rows, tmp_path / "cache")
    assert (again.processed, again.reused) == (0, 4)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.npy")} == npys
    st = rows[2].image.stat()
    os.utime(rows[2].image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    loaded = []
    real = load_scan
    monkeypatch.setattr("disyre.data.cache.load_scan",
                        lambda p, **k: loaded.append(p.name) or real(p, **k))
    third = prepare_cache(rows, tmp_path / "cache")
    assert (third.processed, third.reused) == (1, 3) and loaded == ["s2.nii.gz"]
    # a different preprocessing config redoes everything
    fourth = prepare_cache(rows, tmp_path / "cache", IntensityConfig(upper_percentile=99.0))
    assert fourth.processed == 4


def test_bad_input_names_the_file_and_keeps_finished_work(rows, write_nifti, tmp_path):
    bad = write_nifti("ds/zero.nii.gz", np.zeros((6, 6, 6), np.float32))
    rows = rows[:2] + [ManifestRow("z", bad)] + rows[2:]
    with pytest.raises(InputError, match=r"zero\.nii\.gz: all voxels are zero"):
        prepare_cache(rows, tmp_path / "cache")
    index = json.loads((tmp_path / "cache" / INDEX_NAME).read_text())
    assert sorted(index["entries"]) == ["s0", "s1"]
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]
    cache = prepare_cache(rows, tmp_path / "cache", skip_bad=True)
    assert cache.subjects() == ["s0", "s1", "s2", "s3"] and cache.reused == 2


def test_unsafe_subject_ids_get_distinct_files(rows, tmp_path):
    rows = [ManifestRow("a/b", rows[0].image), ManifestRow("a_b", rows[1].image)]
    cache = prepare_cache(rows, tmp_path / "cache")
    names = {e.files["image"] for e in cache.entries}
    assert len(names) == 2 and all("/" not in n for n in names)
