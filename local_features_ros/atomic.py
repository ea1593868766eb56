"""Atomic file replacement: write to a temp file next to the target, then rename over it.

Why one helper: checkpoints, npz features, ONNX exports and TensorRT engines are all read by
other processes (a resumed run, the node's cache lookup); a kill mid-write must never leave half
a file under the final name, and every writer should get the same file mode a plain ``open()``
would give (``mkstemp`` creates 0600).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temp file name in ``path``'s folder (created if missing); on normal exit it is
    fsynced, given the mode ``0666 & ~umask`` and renamed to ``path``; on any error removed."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=p.name + ".", suffix=".tmp", dir=str(p.parent))
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
