"""Hostile model archives, built the same way for the unit, integration and container tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def symlink_chain(path: Path, payload: str = "escaped.txt") -> Path:
    """``d/y -> .``, ``d/x -> y/y/y/../../../../``, then ``d/x/<payload>``: each name alone looks harmless,
    yet without a link check the payload lands four folders above the unpack folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, target in (("d/y", "."), ("d/x", "y/y/y/../../../../")):
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
        info = tarfile.TarInfo(f"d/x/{payload}")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"pwnd"))
    return path


def bomb(path: Path, member_mb: int) -> Path:
    """One ``model.pth`` of ``member_mb`` MB of zeros: gzip packs each MB into about 1 kB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("model.pth")
        info.size = member_mb * 1024 * 1024
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    return path
