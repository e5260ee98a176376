import os
import stat

import pytest

from disyre.io_utils import OutputExistsError, atomic_path, atomic_write_text, prepare_output_dir


def test_atomic_write_keeps_old_file_on_failure_and_uses_umask_mode(tmp_path):
    p = tmp_path / "out.nii.gz"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError), atomic_path(p) as tmp:
        assert tmp.name.endswith(".nii.gz"), "writers that look at the suffix must see it"
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["out.nii.gz"], "no temporary file left"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


def test_prepare_output_dir_refuses_outputs(tmp_path):
    d = tmp_path / "run"
    prepare_output_dir(d)
    (d / "config.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        prepare_output_dir(d)
    with pytest.raises(OutputExistsError):
        prepare_output_dir(d, marker="config.json")
    prepare_output_dir(d, marker="other.json")
    prepare_output_dir(d, overwrite=True)


def test_no_clobber_write_keeps_a_file_that_appeared_meanwhile(tmp_path):
    p = tmp_path / "map.nii.gz"
    with pytest.raises(OutputExistsError, match="map.nii.gz: exists"), \
            atomic_path(p, overwrite=False) as tmp:
        tmp.write_text("mine")
        p.write_text("another run's")  # written while this one worked
    assert p.read_text() == "another run's"
    assert [f.name for f in tmp_path.iterdir()] == ["map.nii.gz"], "no temporary file left"
    with atomic_path(tmp_path / "new.txt", overwrite=False) as tmp:
        tmp.write_text("new")
    assert (tmp_path / "new.txt").read_text() == "new"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["map.nii.gz", "new.txt"]


def test_unwritable_output_folder_is_one_clear_error(tmp_path):
    from disyre.io_utils import OutputNotWritableError, ensure_writable_dir

    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputNotWritableError, match=r"file/out: output folder is not writable"):
        prepare_output_dir(tmp_path / "file" / "out")
    assert ensure_writable_dir(tmp_path / "a" / "b").is_dir()
    assert not any((tmp_path / "a" / "b").iterdir()), "the probe file is removed"
    if hasattr(os, "geteuid") and os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(OutputNotWritableError, match="ro: output folder is not writable"):
            ensure_writable_dir(ro)
