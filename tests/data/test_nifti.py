"""NIfTI loading, validation and exact write-back (disyre.data.nifti)."""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from disyre.data.intensity import normalize, uncrop
from disyre.data.nifti import (
    InputError,
    load_mask,
    load_scan,
    save_like,
    to_native,
    voxel_size_text,
)


def _rot(ax: int, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    r = np.eye(4)
    i, j = [a for a in range(3) if a != ax]
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


AFFINES = {
    "RAS": np.diag([1.0, 1.2, 2.0, 1.0]) + np.array([[0, 0, 0, -5.0]] + [[0] * 4] * 3),
    "LPS": np.diag([-1.0, -1.0, 1.5, 1.0]),
    # axes ordered P, I, R (a permutation with flips)
    "PIR": np.array([[0, 0, 1.1, -3], [-0.9, 0, 0, 7], [0, -1.3, 0, 2], [0, 0, 0, 1.0]]),
    "oblique": _rot(0, 20) @ _rot(2, -10) @ np.diag([-1.0, 1.0, 1.0, 1.0]),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_round_trip_reproduces_grid_affine_and_orientation(name, write_nifti, brain_volume,
                                                           tmp_path):
    data = brain_volume((9, 11, 7), seed=1)
    src = write_nifti(f"in_{name}.nii.gz", data, AFFINES[name])
    scan = load_scan(src)
    pre = normalize(scan.data)
    full = uncrop(pre.image, pre)
    out = tmp_path / f"map_{name}.nii.gz"
    save_like(full, scan, out)
    back, orig = nib.load(out), nib.load(src)
    assert back.shape == orig.shape
    assert np.array_equal(back.affine, orig.affine)
    assert nib.aff2axcodes(back.affine) == nib.aff2axcodes(orig.affine)
    for get in ("get_qform", "get_sform"):
        assert getattr(back.header, get)(coded=True)[1] == getattr(orig.header, get)(coded=True)[1]
    arr = back.get_fdata()
    assert back.get_data_dtype() == np.float32
    # the map lies on the input's own voxels: zero outside the input's foreground, in [0, 1]
    assert not arr[data == 0].any()
    assert arr.max() == pytest.approx(1.0) and arr.min() == 0.0
    save_like(uncrop(pre.mask, pre), scan, tmp_path / "mask.nii", dtype=np.uint8)
    np.testing.assert_array_equal(np.asanyarray(nib.load(tmp_path / "mask.nii").dataobj),
                                  (data > 0).astype(np.uint8))
    # intensities keep their order along the input's voxels (no permutation happened)
    fg = data > 0
    assert np.corrcoef(arr[fg], data[fg])[0, 1] > 0.99
    np.testing.assert_array_equal(to_native(scan.data, scan), data)


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_canonical_axes_are_axial_first_ras(name, write_nifti):
    aff = AFFINES[name]
    shape = (9, 11, 7)
    data = np.zeros(shape, np.float32)
    ijk = np.array([[1, 2, 3], [7, 2, 3], [1, 9, 3], [1, 2, 5]])
    for n, v in enumerate(ijk, start=1):
        data[tuple(v)] = n
    scan = load_scan(write_nifti(f"m_{name}.nii", data, aff))
    world = (aff[:3, :3] @ ijk.T).T
    pos = {int(scan.data[tuple(p)]): p for p in np.argwhere(scan.data > 0)}
    # (D, H, W) = (Z, Y, X): index increases with S, A, R respectively
    for a, b in [(0, 1), (0, 2), (0, 3)]:
        for dhw_axis, world_axis in [(0, 2), (1, 1), (2, 0)]:
            dw = world[b, world_axis] - world[a, world_axis]
            dd = pos[b + 1][dhw_axis] - pos[a + 1][dhw_axis]
            if abs(dw) > 2.5:  # clear displacement along this world axis
                assert np.sign(dd) == np.sign(dw), (name, a, b, dhw_axis)


def test_nibabel_example_anatomical_round_trip(tmp_path):
    src = f"{data_path}/anatomical.nii"
    scan = load_scan(src)
    orig = nib.load(src)
    assert nib.aff2axcodes(orig.affine) != ("R", "A", "S")  # a non-canonical file
    pre = normalize(scan.data)
    save_like(uncrop(pre.mask, pre), scan, tmp_path / "mask.nii.gz", dtype=np.uint8)
    back = nib.load(tmp_path / "mask.nii.gz")
    assert back.shape == orig.shape and np.array_equal(back.affine, orig.affine)
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(back.dataobj) > 0, orig.get_fdata() > 0)


def test_scaled_integer_input_writes_unscaled_float_map(write_nifti, brain_volume, tmp_path):
    img = nib.Nifti1Image((brain_volume() * 10).astype(np.int16), np.eye(4))
    img.header.set_slope_inter(0.5, 3.0)
    src = tmp_path / "scaled.nii.gz"
    nib.save(img, src)
    scan = load_scan(src)
    save_like(np.full(scan.data.shape, 0.25, np.float32), scan, tmp_path / "m.nii.gz")
    assert np.allclose(nib.load(tmp_path / "m.nii.gz").get_fdata(), 0.25)


def test_example4d_multiframe_is_rejected():
    with pytest.raises(InputError, match=r"example4d\.nii\.gz: 4D image with 2 frames"):
        load_scan(f"{data_path}/example4d.nii.gz")


def test_single_frame_4d_is_squeezed(write_nifti, brain_volume):
    data = brain_volume((6, 7, 8))
    scan = load_scan(write_nifti("one.nii.gz", data[..., None]))
    assert scan.data.shape == (8, 7, 6) and scan.native_shape == (6, 7, 8)


@pytest.mark.parametrize("shape,dims", [((8, 9), "2D"), ((4, 4, 4, 2, 2), "5D")])
def test_wrong_dimensionality_is_rejected(write_nifti, shape, dims):
    p = write_nifti(f"bad{dims}.nii.gz", np.ones(shape, np.float32))
    with pytest.raises(InputError, match=rf"bad{dims}\.nii\.gz: {dims} image"):
        load_scan(p)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.nii\.gz: file not found"):
        load_scan(tmp_path / "nope.nii.gz")


def test_non_nifti_files(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(InputError, match=r"notes\.txt: not a NIfTI file"):
        load_scan(txt)
    fake = tmp_path / "fake.nii"
    fake.write_bytes(b"this is not an image at all" * 20)
    with pytest.raises(InputError, match=r"fake\.nii: not a readable NIfTI"):
        load_scan(fake)
    notgz = tmp_path / "plain.nii.gz"
    notgz.write_bytes(b"not gzip data" * 50)
    with pytest.raises(InputError, match=r"plain\.nii\.gz: not a readable NIfTI"):
        load_scan(notgz)


def test_truncated_gzip_is_reported(write_nifti, brain_volume):
    p = write_nifti("trunc.nii.gz", brain_volume((20, 20, 20)))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"trunc\.nii\.gz: .*corrupt or truncated"):
        load_scan(p)


def test_corrupt_gzip_stream_is_reported(write_nifti, brain_volume, tmp_path):
    p = write_nifti("c.nii", brain_volume((20, 20, 20)))
    raw = bytearray(gzip.compress(p.read_bytes()))
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)  # damage the deflate stream
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"corrupt\.nii\.gz: "):
        load_scan(bad)


def test_nan_and_inf_are_zeroed_with_a_warning(write_nifti, brain_volume):
    data = brain_volume()
    data[5, 5, 5], data[6, 6, 6] = np.nan, np.inf
    p = write_nifti("nan.nii.gz", data)
    with pytest.warns(UserWarning, match=r"nan\.nii\.gz: 2 NaN/Inf voxel\(s\) replaced by 0"):
        scan = load_scan(p)
    assert np.isfinite(scan.data).all()
    assert to_native(scan.data, scan)[5, 5, 5] == 0 and to_native(scan.data, scan)[6, 6, 6] == 0
    with pytest.raises(InputError, match=r"nan\.nii\.gz: 2 NaN/Inf"):
        load_scan(p, nan_policy="error")


def test_all_zero_volume_is_rejected(write_nifti):
    p = write_nifti("zeros.nii.gz", np.zeros((5, 5, 5), np.float32))
    with pytest.raises(InputError, match=r"zeros\.nii\.gz: all voxels are zero"):
        load_scan(p)


def test_mask_checks(write_nifti, brain_volume):
    data = brain_volume()
    aff = AFFINES["LPS"]
    scan = load_scan(write_nifti("img.nii.gz", data, aff))
    good = write_nifti("les.nii.gz", (data > 120).astype(np.uint8), aff)
    m = load_mask(good, scan)
    assert m.dtype == bool and m.shape == scan.data.shape
    np.testing.assert_array_equal(to_native(m, scan), data > 120)
    empty = write_nifti("empty.nii.gz", np.zeros(data.shape, np.uint8), aff)
    assert not load_mask(empty, scan).any()  # healthy case: empty mask is fine
    with pytest.raises(InputError, match=r"shape.nii.gz: mask shape \(12, 14, 9\) differs"):
        load_mask(write_nifti("shape.nii.gz", np.zeros((12, 14, 9), np.uint8), aff), scan)
    with pytest.raises(InputError, match=r"aff\.nii\.gz: mask affine differs"):
        load_mask(write_nifti("aff.nii.gz", np.zeros(data.shape, np.uint8), np.eye(4)), scan)
    labels = np.zeros(data.shape, np.uint8)
    labels[3:5, 3:5, 3:5], labels[6:8, 6:8, 6:8] = 2, 4
    lab = write_nifti("seg.nii.gz", labels, aff)
    with pytest.raises(InputError, match=r"seg\.nii\.gz: mask is not binary \(values 0, 2, 4\)"):
        load_mask(lab, scan)
    np.testing.assert_array_equal(to_native(load_mask(lab, scan, binarize=True), scan),
                                  labels > 0)


def test_save_like_failure_leaves_nothing_behind(write_nifti, brain_volume, tmp_path,
                                                  monkeypatch):
    scan = load_scan(write_nifti("img.nii.gz", brain_volume()))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ValueError, match="does not match the scan's grid"):
        save_like(np.zeros((3, 3, 3)), scan, out_dir / "map.nii.gz")
    assert list(out_dir.iterdir()) == []
    save_like(scan.data, scan, out_dir / "map.nii.gz")
    before = (out_dir / "map.nii.gz").read_bytes()

    def broken_save(img, path):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr("disyre.data.nifti.nib.save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_like(scan.data * 0.5, scan, out_dir / "map.nii.gz")
    assert [p.name for p in out_dir.iterdir()] == ["map.nii.gz"]
    assert (out_dir / "map.nii.gz").read_bytes() == before


@pytest.mark.parametrize("name,expected", [("LPS", (1.5, 1.0, 1.0)), ("PIR", (1.3, 0.9, 1.1)),
                                           ("RAS", (2.0, 1.2, 1.0))])
def test_spacing_follows_the_dhw_axes(name, expected, write_nifti, brain_volume):
    scan = load_scan(write_nifti(f"sp_{name}.nii", brain_volume((9, 11, 7)), AFFINES[name]))
    assert scan.spacing == pytest.approx(expected)


def _offset_pair(write_nifti):
    """One brain stored twice as int16: ``x / max * 3000`` and the same minus 500 (background
    -500, the darkest brain voxels negative)."""
    rng = np.random.default_rng(3)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in (20, 22, 18)], indexing="ij")
    inside = sum(g**2 for g in grids) < 0.7
    x = np.where(inside, rng.uniform(0.02, 1.0, inside.shape), 0.0)
    plain = np.round(x / x.max() * 3000).astype(np.int16)
    return (write_nifti("plain.nii.gz", plain),
            write_nifti("offset.nii.gz", (plain - 500).astype(np.int16)), plain)


def test_intensity_offset_is_found_and_removed(write_nifti):
    """The same scan with its background at -500 normalises exactly like the plain one, and
    the offset is named; the plain scan is read as stored, without a word."""
    import warnings

    from disyre.data.intensity import normalize

    plain_p, offset_p, plain = _offset_pair(write_nifti)
    assert (plain[plain > 0] < 500).sum() > 100  # brain voxels that the offset makes negative
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain_scan = load_scan(plain_p)
    assert plain_scan.offset == 0 and np.array_equal(to_native(plain_scan.data, plain_scan),
                                                     plain.astype(np.float32))
    with pytest.warns(UserWarning, match=r"offset\.nii\.gz: background at -500, not 0 \(an "
                      r"intensity offset\); shifted by 500"):
        scan = load_scan(offset_p)
    assert scan.offset == -500
    np.testing.assert_array_equal(scan.data, plain_scan.data)
    a, b = normalize(plain_scan.data, spacing=plain_scan.spacing), normalize(
        scan.data, spacing=scan.spacing)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.image, b.image)


def test_negative_voxels_without_a_constant_background_are_warned_about(write_nifti):
    _, _, plain = _offset_pair(write_nifti)
    noisy = plain.astype(np.float32) - 500 + np.random.default_rng(0).normal(0, 5, plain.shape)
    p = write_nifti("noisy.nii.gz", noisy.astype(np.float32))
    with pytest.warns(UserWarning, match=r"noisy\.nii\.gz: \d+ voxels \(\d+\.\d % of the "
                      r"non-zero ones, down to -5\d\d(\.\d+)?\) are negative and count as "
                      "background"):
        scan = load_scan(p)
    assert scan.offset == 0


def test_voxel_size_text_uses_the_files_own_axes(write_nifti, brain_volume):
    """A PIR file: the size in the file's i, j, k order, whether it comes from the affine or
    from disyre's (D, H, W) spacing."""
    affine = np.array([[0, 0, 1.0, 0], [-2.0, 0, 0, 0], [0, -3.0, 0, 0], [0, 0, 0, 1]])
    scan = load_scan(write_nifti("pir.nii.gz", brain_volume(), affine))
    assert scan.spacing == (3.0, 2.0, 1.0)  # (D, H, W) = (S, A, R)
    text = "2 x 3 x 1 mm (file axes i, j, k toward P, I, R)"
    assert voxel_size_text(scan.affine) == text
    assert voxel_size_text(scan.affine, scan.spacing) == text


def test_broken_symbolic_link_is_named(tmp_path):
    (tmp_path / "a.nii.gz").symlink_to(tmp_path / "elsewhere.nii.gz")
    with pytest.raises(InputError, match=r"a\.nii\.gz: broken symbolic link \(its target "
                       r".*elsewhere\.nii\.gz does not exist\)"):
        load_scan(tmp_path / "a.nii.gz")


@pytest.mark.parametrize("affine, why", [
    (np.diag([0.0, 1.0, 1.0, 1.0]), "zero"),
    (np.diag([np.nan, 1.0, 1.0, 1.0]), "not finite"),
    (np.array([[1.0, 1.0, 0, 0], [1.0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]),
     "singular"),
])
def test_bad_affine_is_one_line_naming_the_file(tmp_path, affine, why) -> None:
    from disyre.data.nifti import InputError, load_scan

    vol = np.zeros((6, 7, 8), np.float32)
    vol[1:5, 2:5, 2:6] = 1.0
    path = tmp_path / "bad_affine.nii"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    raw = path.read_bytes()  # the header as another program wrote it (nibabel would fix it)
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = affine[:3]
    path.write_bytes(hdr.binaryblock + raw[len(hdr.binaryblock):])
    with pytest.raises(InputError, match=why) as e:
        load_scan(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)
