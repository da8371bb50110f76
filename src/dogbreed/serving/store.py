"""The model store: TargetModel paths, bounded unpacking, and the bounded unpack folder.

A target is a path relative to the store root, such as
``dog-breed-classifier/model.tar.gz``. It is resolved strictly inside the
root. An archive is unpacked once into a cache folder outside the store (the
store may be read-only), keyed by the archive's path, size and modification
time: replacing an archive serves the new model.

Every archive is treated as hostile; :mod:`dogbreed.serving.archive` writes
its members. They are written into a staging folder that is renamed into
place only when complete, under a per-archive file lock, so concurrent
workers never see half an artifact and a refused archive leaves nothing
behind.

The unpack folder itself is bounded (:class:`CacheLimits`): past its size or
entry count the least recently used folders that no worker is loading are
removed. Staging folders that a killed worker left are removed at start-up.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from dogbreed.serving.archive import MB, ArchiveLimits, extract, storage_error
from dogbreed.serving.errors import bad_request, not_found
from dogbreed.settings import positive_int, text

log = logging.getLogger(__name__)

STAGING_MARK = ".staging."
# How long a listing of the store's targets is reused before the store is walked again.
TARGET_LIST_TTL_SECONDS = 5.0


@dataclass(frozen=True)
class CacheLimits:
    """Bounds on the unpack folder as a whole."""

    total_bytes: int = 4096 * MB
    entries: int = 16

    @classmethod
    def from_env(cls) -> CacheLimits:
        return cls(
            total_bytes=positive_int("DOGBREED_UNPACK_CACHE_MB", cls.total_bytes // MB) * MB,
            entries=positive_int("DOGBREED_UNPACK_CACHE_ENTRIES", cls.entries),
        )


def resolve_target(root: Path, target: str, listing: Callable[[], list[str]] | None = None) -> Path:
    """The archive or folder ``target`` names under ``root``; never anything outside it.

    Checks the string before touching the file system, so an escaping target
    reads no file. ``listing`` gives the targets a 404 names (default: walk the store).
    """
    if not target or "\x00" in target or "\\" in target:
        raise bad_request(f"invalid target model {target[:200]!r}")
    relative = PurePosixPath(target)
    if relative.is_absolute() or any(part in ("..", ".") for part in relative.parts):
        raise bad_request(f"target model {target[:200]!r} must be a relative path inside the model store")
    root = root.resolve()
    path = (root / relative).resolve()
    if path != root and root not in path.parents:  # a symbolic link inside the store points out
        raise bad_request(f"target model {target[:200]!r} leaves the model store")
    if not path.exists():
        available = (listing or (lambda: list_targets(root)))()
        raise not_found(f"target model {target[:200]!r} not found; available: {', '.join(available) or 'none'}")
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


class TargetListing:
    """The store's targets, walked at most once per ``ttl`` seconds, not on every request."""

    def __init__(self, root: Path, ttl: float = TARGET_LIST_TTL_SECONDS):
        self.root = root
        self.ttl = ttl
        self._targets: list[str] = []
        self._taken = float("-inf")
        self._lock = threading.Lock()

    def __call__(self) -> list[str]:
        with self._lock:
            if time.monotonic() - self._taken >= self.ttl:
                self._targets = list_targets(self.root)
                self._taken = time.monotonic()
            return list(self._targets)


def default_unpack_dir() -> Path:
    return Path(text("DOGBREED_UNPACK_DIR") or Path(tempfile.gettempdir()) / "dogbreed-models")


def archive_key(archive: Path) -> str:
    """Names one version of one archive: its real path, size and modification time."""
    info = archive.stat()
    return hashlib.sha256(f"{archive.resolve()}:{info.st_size}:{info.st_mtime_ns}".encode()).hexdigest()[:20]


def _lock_path(unpack_dir: Path, key: str) -> Path:
    return unpack_dir / f".{key}.lock"


@contextmanager
def _key_lock(unpack_dir: Path, key: str, blocking: bool = True) -> Iterator[bool]:
    """Hold the archive version's lock file (exclusive); yields False when ``blocking`` is off and it is taken.

    An evicted version's lock file is deleted while held; a waiter that then gets the lock on the deleted
    file sees that the path names another file (or none) and takes the lock again.
    """
    path = _lock_path(unpack_dir, key)
    while True:
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                current = os.stat(path)
            except FileNotFoundError:
                continue
            if os.fstat(handle.fileno()).st_ino != current.st_ino:
                continue
            yield True
            return


@contextmanager
def unpacked(
    archive: Path,
    unpack_dir: Path | None = None,
    limits: ArchiveLimits | None = None,
    cache_limits: CacheLimits | None = None,
) -> Iterator[Path]:
    """The artifact folder of ``archive``, unpacked once; no other worker evicts it while the block runs."""
    unpack_dir = unpack_dir or default_unpack_dir()
    try:
        unpack_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc) from exc
    key = archive_key(archive)
    dest = unpack_dir / key
    with _key_lock(unpack_dir, key):
        if not dest.is_dir():
            _unpack_into(archive, dest, limits or ArchiveLimits.from_env())
            evict(unpack_dir, cache_limits or CacheLimits.from_env(), keep={key})
        os.utime(dest)  # its last use, for eviction
        yield dest


def _unpack_into(archive: Path, dest: Path, limits: ArchiveLimits) -> None:
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}{STAGING_MARK}", dir=dest.parent))
    except OSError as exc:
        raise storage_error(exc) from exc
    try:
        log.info("unpacking %s", archive.name)
        extract(archive, staging, limits)
        os.rename(staging, dest)
    except OSError as exc:
        raise storage_error(exc) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def evict(unpack_dir: Path, limits: CacheLimits, keep: Collection[str] = frozenset()) -> list[str]:
    """Remove least recently used unpacked folders until the folder fits ``limits``; returns their keys.

    A folder in ``keep``, or one whose lock another worker holds (unpacking or loading it), stays.
    """
    entries = []
    for folder in unpack_dir.iterdir():
        if folder.is_dir() and not folder.name.startswith("."):
            entries.append((folder.stat().st_mtime, folder.name, _folder_bytes(folder)))
    entries.sort()
    total = sum(size for _, _, size in entries)
    count = len(entries)
    removed = []
    for _, key, size in entries:
        if total <= limits.total_bytes and count <= limits.entries:
            break
        if key in keep:
            continue
        with _key_lock(unpack_dir, key, blocking=False) as locked:
            if not locked:
                continue
            shutil.rmtree(unpack_dir / key, ignore_errors=True)
            _lock_path(unpack_dir, key).unlink(missing_ok=True)
        total -= size
        count -= 1
        removed.append(key)
    if removed:
        log.info("unpack cache: removed %d least recently used model folder(s)", len(removed))
    return removed


def clean_staging(unpack_dir: Path) -> list[str]:
    """Remove staging folders whose unpacking no live worker holds (a worker killed mid-unpack left them)."""
    removed: list[str] = []
    if not unpack_dir.is_dir():
        return removed
    for folder in unpack_dir.iterdir():
        if not (folder.is_dir() and folder.name.startswith(".") and STAGING_MARK in folder.name):
            continue
        key = folder.name[1:].split(STAGING_MARK, 1)[0]
        with _key_lock(unpack_dir, key, blocking=False) as locked:
            if locked:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
    if removed:
        log.info("removed %d staging folder(s) left by an interrupted unpack", len(removed))
    return removed


class LRU:
    """At most ``capacity`` values by key (None: no bound), the least recently used dropped first; thread-safe."""

    def __init__(self, capacity: int | None):
        self.capacity = None if capacity is None else max(1, capacity)
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.RLock()  # reentrant: subclasses call these methods under their own hold of it

    def get(self, key: str) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while self.capacity is not None and len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)
