import os
import stat

import pytest

from nexplain.io import TEMPORARY, atomic_path


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_path_hands_out_a_fresh_name_and_renames_on_success(tmp_path):
    out = tmp_path / "sub" / "table.parquet"
    with atomic_path(out) as tmp:
        # a unique hidden name, but no file: a writer that truncated one would make ext4
        # start the file's writeback at close (auto_da_alloc)
        assert tmp.parent == out.parent and TEMPORARY.match(tmp.name) and not tmp.exists()
        tmp.write_bytes(b"done")
    assert out.read_bytes() == b"done" and os.listdir(out.parent) == ["table.parquet"]
    mask = os.umask(0)
    os.umask(mask)
    assert _mode(out) == 0o666 & ~mask  # the writer's normal permissions, not mkstemp's 0600


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "table.parquet"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["table.parquet"]
