"""Atomic writes: an output is either complete or absent, never half-written.

Temporaries are hidden siblings named `.<output name>.<8 random chars>.tmp`: a killed job
leaves them behind, and `nexplain.tracking.resume` sweeps that pattern at the next start.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path


# the name of a temporary made here: "." + the output's name + "." + mkstemp's 8 random characters + ".tmp"
TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # A unique name, but no file: the writer creates it (with normal permissions, where
    # mkstemp makes 0600). Opening an existing file for writing truncates it, and then ext4
    # (auto_da_alloc) starts its writeback at close, on the job's clock: 35 ms per 100 MB.
    tmp.unlink()
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield an empty temporary sibling directory; swap it in for `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_npz(path: str | os.PathLike, arrays: dict) -> None:
    """An uncompressed .npz with stable bytes (fixed member dates), written atomically."""
    import zipfile

    import numpy as np

    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as z:
        for name, arr in arrays.items():
            with z.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr))
