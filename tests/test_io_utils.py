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
