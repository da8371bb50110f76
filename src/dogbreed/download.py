"""Download and unpack a dataset archive (``make data``).

- resumes a partial download with an HTTP Range request, and retries with
  back-off when the connection drops;
- shows a progress bar in a terminal, plain lines otherwise;
- verifies the size the server announced, the SHA-256 when one is given, and
  the MD5 when the server's ETag is one (S3 single-part uploads);
- unpacks into a temporary folder next to the destination and moves it into
  place only when every member is safe: no absolute paths, no ``..``, no
  links.

    dogbreed download --url URL --dest local_data [--sha256 HEX]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import re
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from dogbreed.errors import DogbreedError, run_cli
from dogbreed.progress import is_interactive

log = logging.getLogger("dogbreed.download")

CHUNK = 1 << 20


class DownloadError(DogbreedError):
    pass


def _total_size(response) -> int | None:
    content_range = response.headers.get("Content-Range")
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _etag_md5(response) -> str | None:
    etag = (response.headers.get("ETag") or "").strip('"')
    return etag.lower() if re.fullmatch(r"[0-9a-fA-F]{32}", etag) else None


def _fetch_once(url: str, part: Path, timeout: float) -> tuple[int | None, str | None]:
    """Append the rest of ``url`` to ``part``; returns (total size, ETag MD5)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the partial file already holds everything
            return have, None
        raise
    with response:
        if have and response.status != 206:
            log.info("server ignored the range request; downloading from the start")
            have = 0
        total = _total_size(response)
        md5 = _etag_md5(response)
        mode = "ab" if have else "wb"
        interactive = is_interactive()
        with (
            open(part, mode) as out,
            tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.name, disable=not interactive) as bar,
        ):
            last_log, done = time.monotonic(), have
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                bar.update(len(chunk))
                if not interactive and time.monotonic() - last_log > 10:
                    last_log = time.monotonic()
                    log.info("downloaded %d of %s bytes", done, total or "?")
    return total, md5


def download(
    url: str, target: Path, *, retries: int = 5, timeout: float = 60, backoff: float = 2.0
) -> tuple[int | None, str | None]:
    """Download ``url`` to ``target`` via ``target.part``, resuming and retrying."""
    part = target.with_name(target.name + ".part")
    for attempt in range(1, retries + 1):
        try:
            total, md5 = _fetch_once(url, part, timeout)
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
            problem = f"HTTP {exc.code}"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            problem = str(getattr(exc, "reason", exc))
        else:
            size = part.stat().st_size
            if total is None or size == total:
                part.replace(target)
                return total, md5
            problem = f"got {size} of {total} bytes"
        if attempt == retries:
            raise DownloadError(f"{url}: download failed after {retries} attempts ({problem}); run again to resume")
        wait = backoff * 2 ** (attempt - 1)
        log.warning(
            "download interrupted (%s); retrying in %.0fs (attempt %d of %d)", problem, wait, attempt + 1, retries
        )
        time.sleep(wait)
    raise AssertionError("unreachable")


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, *, size: int | None, sha256: str | None, md5: str | None) -> None:
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise DownloadError(f"{path}: size {actual_size} bytes, expected {size}")
    if sha256 and file_digest(path, "sha256") != sha256.lower():
        raise DownloadError(f"{path}: SHA-256 mismatch (expected {sha256}); delete it and download again")
    if md5 and file_digest(path, "md5") != md5:
        raise DownloadError(f"{path}: MD5 does not match the server's ETag {md5}; delete it and download again")


def _check_member(info: zipfile.ZipInfo) -> None:
    name = info.filename
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        raise DownloadError(f"unsafe path in archive: {name!r}")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DownloadError(f"archive member {name!r} is a symbolic link; refusing to unpack")


def safe_extract(archive: Path, dest: Path) -> list[Path]:
    """Unpack ``archive`` into ``dest`` atomically; returns the top-level entries created."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive} is not a valid zip file: {exc}") from exc
    with zf:
        members = zf.infolist()
        for info in members:
            _check_member(info)
        tops = sorted(
            {
                PurePosixPath(i.filename.replace("\\", "/")).parts[0]
                for i in members
                if not i.filename.startswith("__MACOSX")
            }
        )
        existing = [t for t in tops if (dest / t).exists()]
        if existing and len(existing) == len(tops):
            log.info("%s already unpacked in %s", archive.name, dest)
            return [dest / t for t in tops]
        if existing:
            raise DownloadError(f"{dest / existing[0]} already exists; remove it to unpack again")
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest))
        try:
            for info in members:
                if info.filename.startswith("__MACOSX"):
                    continue
                zf.extract(info, staging)
            for top in tops:
                (staging / top).replace(dest / top)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return [dest / t for t in tops]


def fetch_dataset(
    url: str, dest: Path, *, sha256: str | None = None, size: int | None = None, retries: int = 5, backoff: float = 2.0
) -> list[Path]:
    name = PurePosixPath(urllib.parse.urlparse(url).path).name or "dataset.zip"
    archive = dest / name
    dest.mkdir(parents=True, exist_ok=True)
    if archive.exists():
        log.info("%s already downloaded", archive)
        total, md5 = None, None
    else:
        log.info("downloading %s to %s", url, archive)
        total, md5 = download(url, archive, retries=retries, backoff=backoff)
    try:
        verify(archive, size=size if size is not None else total, sha256=sha256, md5=md5)
    except DownloadError:
        archive.unlink()
        raise
    log.info("verified %s (%d bytes)", archive, archive.stat().st_size)
    created = safe_extract(archive, dest)
    log.info("unpacked %s", ", ".join(str(p) for p in created))
    return created


def get_args_parser(prog: str = "dogbreed download") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the dataset's zip archive")
    parser.add_argument("--dest", type=Path, required=True, help="the folder it is unpacked into")
    parser.add_argument("--sha256", help="expected SHA-256 of the archive")
    parser.add_argument("--size", type=int, help="expected size in bytes")
    parser.add_argument("--retries", type=int, default=5, help="attempts after the first")
    parser.add_argument("--backoff", type=float, default=2.0, help="seconds before the first retry, doubled each time")
    return parser


def run(argv: list[str] | None = None, prog: str = "dogbreed download") -> int:
    args = get_args_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stdout)
    return run_cli(
        prog,
        lambda: fetch_dataset(
            args.url, args.dest, sha256=args.sha256, size=args.size, retries=args.retries, backoff=args.backoff
        ),
    )
