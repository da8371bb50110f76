"""Unpacking a model archive, which is treated as hostile.

Unpacking is written here rather than left to tarfile, because Debian
bookworm's Python (3.11.2) has no extraction filter, and because artifacts
never need what tarfile would create:

- only regular files and folders are written; a symbolic or hard link,
  device, FIFO or sparse member refuses the whole archive, so nothing is
  ever written through a link, whatever the Python version;
- member names must be relative and free of ``..``;
- the member count, each member's size and the total size are bounded
  (:class:`ArchiveLimits`), checked from each member's header before its
  data is decompressed;
- a name that appears twice is refused, never overwritten.

A refused archive is a 400 for the client; a failure of the server's own disk
is a 507 or 500 whose detail goes to the log only.
"""

from __future__ import annotations

import errno
import logging
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from dogbreed.serving.errors import InferenceError, redact_paths
from dogbreed.settings import positive_int

log = logging.getLogger(__name__)

MB = 1024 * 1024
COPY_CHUNK = 1 * MB
# What reading a corrupt, truncated or non-tar archive raises (gzip's own errors are OSError or zlib.error).
ARCHIVE_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what one archive may unpack to. A ResNet50 artifact is 3 files, about 250 MB."""

    members: int = 64
    member_bytes: int = 1024 * MB
    total_bytes: int = 2048 * MB

    @classmethod
    def from_env(cls) -> ArchiveLimits:
        return cls(
            members=positive_int("DOGBREED_MAX_ARCHIVE_MEMBERS", cls.members),
            member_bytes=positive_int("DOGBREED_MAX_MEMBER_MB", cls.member_bytes // MB) * MB,
            total_bytes=positive_int("DOGBREED_MAX_UNPACKED_MB", cls.total_bytes // MB) * MB,
        )


def archive_error(archive: Path, reason: str) -> InferenceError:
    return InferenceError(400, "ModelArchiveError", f"cannot unpack {archive.name}: {reason}")


def storage_error(exc: OSError) -> InferenceError:
    """The server, not the archive, failed: no space, no permission. Detail goes to the log only."""
    log.error("unpacking failed on the server side: %s", exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InferenceError(507, "InsufficientStorage", "the server has no disk space left to unpack the model")
    return InferenceError(500, "ModelUnpackFailed", "the server could not unpack the model")


def member_path(member: tarfile.TarInfo) -> PurePosixPath | None:
    """Where ``member`` goes inside the unpack folder; None for the archive's root folder itself.

    Refuses (ValueError) every link and special file, and every name that is absolute or holds ``..``.
    """
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"unsafe member path {member.name!r}")
    if member.issym() or member.islnk():
        raise ValueError(f"member {member.name!r} is a link; model artifacts hold no links")
    if member.issparse() or not (member.isfile() or member.isdir()):
        raise ValueError(f"member {member.name!r} is not a regular file or folder")
    return PurePosixPath(*path.parts) if path.parts else None


def _copy_member(source: IO[bytes], dest: Path, archive: Path) -> None:
    try:  # O_EXCL: a name that appears twice is refused, never overwritten
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except (FileExistsError, IsADirectoryError, NotADirectoryError):
        raise archive_error(archive, f"member {dest.name!r} appears twice or clashes with a folder") from None
    except OSError as exc:
        raise storage_error(exc) from exc
    with os.fdopen(fd, "wb") as out:
        while True:
            try:
                chunk = source.read(COPY_CHUNK)
            except ARCHIVE_READ_ERRORS as exc:
                raise archive_error(archive, f"corrupt data: {redact_paths(str(exc))}") from exc
            if not chunk:
                return
            try:
                out.write(chunk)
            except OSError as exc:
                raise storage_error(exc) from exc


def _make_folder(folder: Path, archive: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise archive_error(archive, f"folder {folder.name!r} clashes with a file") from None
    except OSError as exc:
        raise storage_error(exc) from exc


def _unreadable(archive: Path, exc: Exception) -> InferenceError:
    return archive_error(archive, f"not a readable tar archive: {redact_paths(str(exc))}")


def _next_member(tar: tarfile.TarFile, archive: Path) -> tarfile.TarInfo | None:
    try:
        return tar.next()
    except ARCHIVE_READ_ERRORS as exc:
        raise _unreadable(archive, exc) from exc


def extract(archive: Path, dest: Path, limits: ArchiveLimits) -> None:
    """Write ``archive``'s files and folders under ``dest`` (which exists), within ``limits``."""
    try:
        # A stream: each header is checked before its data is read. Opened apart from the `with` below, so that
        # only opening errors mean an unreadable archive.
        tar = tarfile.open(archive, "r|*")  # noqa: SIM115
    except ARCHIVE_READ_ERRORS as exc:
        raise _unreadable(archive, exc) from exc
    count = total = 0
    with tar:
        while (member := _next_member(tar, archive)) is not None:
            count += 1
            if count > limits.members:
                raise too_large(archive, f"more than {limits.members} members (DOGBREED_MAX_ARCHIVE_MEMBERS)")
            try:
                relative = member_path(member)
            except ValueError as exc:
                raise archive_error(archive, str(exc)) from None
            if relative is None:
                continue
            target = dest / relative
            if member.isdir():
                _make_folder(target, archive)
                continue
            if member.size > limits.member_bytes:
                raise too_large(
                    archive,
                    f"member {member.name!r} is {member.size} bytes; the limit is "
                    f"{limits.member_bytes} (DOGBREED_MAX_MEMBER_MB)",
                )
            total += member.size
            if total > limits.total_bytes:
                raise too_large(archive, f"it unpacks to over {limits.total_bytes} bytes (DOGBREED_MAX_UNPACKED_MB)")
            _make_folder(target.parent, archive)
            source = tar.extractfile(member)
            if source is None:
                raise archive_error(archive, f"member {member.name!r} has no data")
            _copy_member(source, target, archive)


def too_large(archive: Path, reason: str) -> InferenceError:
    return InferenceError(400, "ModelArchiveTooLarge", f"cannot unpack {archive.name}: {reason}")
