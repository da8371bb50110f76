"""The model store: TargetModel paths, safe unpacking, and a bounded cache.

A target is a path relative to the store root, such as
``dog-breed-classifier/model.tar.gz``. It is resolved strictly inside the
root. An archive is unpacked once into a cache folder outside the store (the
store may be read-only), with tarfile's ``data`` filter (no links leaving the
folder, no device files) after refusing absolute and ``..`` member names. It
is unpacked into a temporary folder that is renamed into place, under a file
lock, so concurrent workers never see half an artifact. The unpacked folder
is keyed by the archive's path, size and modification time: replacing an
archive serves the new model.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tarfile
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from dogbreed.serving.errors import InferenceError, bad_request, not_found



def resolve_target(root: Path, target: str) -> Path:
    """The archive or folder ``target`` names under ``root``; never anything outside it.

    Checks the string before touching the file system, so an escaping target
    reads no file.
    """
    if not target or "\x00" in target or "\\" in target:
        raise bad_request(f"invalid target model {target!r}")
    relative = PurePosixPath(target)
    if relative.is_absolute() or any(part in ("..", ".") for part in relative.parts):
        raise bad_request(f"target model {target!r} must be a relative path inside the model store")
    root = root.resolve()
    path = (root / relative).resolve()
    if path != root and root not in path.parents:  # a symbolic link inside the store points out
        raise bad_request(f"target model {target!r} leaves the model store")
    if not path.exists():
        raise not_found(f"target model {target!r} not found; available: {', '.join(list_targets(root)) or 'none'}")
    return path


def list_targets(root: Path) -> list[str]:
    """Archives (``*.tar.gz``) and artifact folders (with ``metadata.json``) under ``root``."""
    if not root.is_dir():
        return []
    targets = set()
    for path in root.rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
            targets.add(str(path.relative_to(root)))
        elif path.name == "metadata.json" and path.parent != root:
            targets.add(str(path.parent.relative_to(root)))
    return sorted(targets)


def check_member(member: tarfile.TarInfo) -> None:
    """Refuse what could write outside the target folder or create special files.

    Checked by hand as well as by tarfile's ``data`` filter: an absolute or
    ``..`` name is refused outright (the filter would quietly strip it), and
    Python releases without the filter are still protected.
    """
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"unsafe member path {member.name!r}")
    if member.issym() or member.islnk():
        # A symbolic link resolves from its own folder, a hard link from the archive root.
        base = path.parent if member.issym() else PurePosixPath()
        target = PurePosixPath(os.path.normpath(base / member.linkname))
        if PurePosixPath(member.linkname).is_absolute() or target.parts[:1] == ("..",):
            raise ValueError(f"member {member.name!r} links outside the archive ({member.linkname!r})")
    elif not (member.isfile() or member.isdir()):
        raise ValueError(f"member {member.name!r} is a device, FIFO or other special file")


def default_unpack_dir() -> Path:
    return Path(os.environ.get("DOGBREED_UNPACK_DIR") or Path(tempfile.gettempdir()) / "dogbreed-models")


def archive_key(archive: Path) -> str:
    """Names one version of one archive: its real path, size and modification time."""
    info = archive.stat()
    return hashlib.sha256(f"{archive.resolve()}:{info.st_size}:{info.st_mtime_ns}".encode()).hexdigest()[:20]


def unpack(archive: Path, unpack_dir: Path | None = None) -> Path:
    """Unpack ``archive`` once into the unpack folder and return the artifact folder."""
    unpack_dir = unpack_dir or default_unpack_dir()
    unpack_dir.mkdir(parents=True, exist_ok=True)
    key = archive_key(archive)
    dest = unpack_dir / key
    if dest.is_dir():
        return dest
    with open(unpack_dir / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker unpacks; the others wait, then reuse it
        if dest.is_dir():
            return dest
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=unpack_dir))
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for member in members:
                    check_member(member)
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 (Debian bookworm ships 3.11.2)
                    tar.extractall(staging, members=members, filter="data")
                else:
                    tar.extractall(staging, members=members)
            os.rename(staging, dest)
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise InferenceError(400, "ModelArchiveError", f"cannot unpack {archive.name}: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return dest


class ModelCache:
    """Loaded models by key, least recently used evicted past ``capacity``."""

    def __init__(self, capacity: int, loader: Callable[[Path], Any]):
        self.capacity = max(1, capacity)
        self.loader = loader
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, path: Path) -> Any:
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        model = self.loader(path)
        with self._lock:
            self._models[key] = model
            self._models.move_to_end(key)
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        return model

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._models)
