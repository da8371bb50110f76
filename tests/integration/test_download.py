"""make data's downloader against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dogbreed.download import DownloadError, fetch_dataset

pytestmark = pytest.mark.integration


def make_zip(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return buffer.getvalue()


DATASET = make_zip(
    {
        f"dogImages/{split}/001.Affenpinscher/a_{i}.jpg": bytes([i]) * 5000
        for split in ("train", "valid", "test")
        for i in range(20)
    }
)


class ZipServer:
    """Serves one payload with Range support; can cut the first N responses short."""

    def __init__(self, payload: bytes, cut_first: int = 0, etag: str | None = None):
        self.payload, self.cut_remaining, self.etag = payload, cut_first, etag
        self.requests: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = server.payload[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
                if server.etag:
                    self.send_header("ETag", f'"{server.etag}"')
                self.end_headers()
                if server.cut_remaining > 0:
                    server.cut_remaining -= 1
                    self.wfile.write(body[: len(body) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dog-project/dogImages.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_interrupted_download_resumes_and_verifies(tmp_path):
    sha = hashlib.sha256(DATASET).hexdigest()
    md5 = hashlib.md5(DATASET).hexdigest()
    with ZipServer(DATASET, cut_first=2, etag=md5) as server:
        created = fetch_dataset(server.url, tmp_path, sha256=sha, backoff=0.01)
    assert server.requests[0] is None and all(r and r.startswith("bytes=") for r in server.requests[1:])
    assert len(server.requests) == 3
    assert created == [tmp_path / "dogImages"]
    assert len(list((tmp_path / "dogImages" / "valid" / "001.Affenpinscher").iterdir())) == 20
    assert (tmp_path / "dogImages.zip").stat().st_size == len(DATASET)
    assert not list(tmp_path.glob(".unpack-*"))


def test_checksum_mismatch_is_reported_and_the_file_removed(tmp_path):
    with ZipServer(DATASET) as server, pytest.raises(DownloadError, match="SHA-256 mismatch"):
        fetch_dataset(server.url, tmp_path, sha256="0" * 64)
    assert not (tmp_path / "dogImages.zip").exists() and not (tmp_path / "dogImages").exists()


def test_etag_md5_is_checked(tmp_path):
    with (
        ZipServer(DATASET, etag="0" * 32) as server,
        pytest.raises(DownloadError, match="MD5 does not match the server's ETag"),
    ):
        fetch_dataset(server.url, tmp_path)


@pytest.mark.parametrize(
    "payload, message",
    [
        (make_zip({"../evil.txt": b"x"}), "unsafe path in archive: '../evil.txt'"),
        (make_zip({"/etc/evil.txt": b"x"}), "unsafe path"),
        (make_zip({"ok/a.txt": b"x"}, links={"ok/link": "/etc/passwd"}), "is a symbolic link"),
    ],
)
def test_unsafe_archives_are_not_unpacked(tmp_path, payload, message):
    dest = tmp_path / "dest"
    with ZipServer(payload) as server, pytest.raises(DownloadError, match=message):
        fetch_dataset(server.url, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert [p.name for p in dest.iterdir()] == ["dogImages.zip"]


def test_cli_reports_a_failed_download_in_one_line(tmp_path):
    with ZipServer(DATASET) as server:
        url = server.url
    # The server is gone: every attempt is refused.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dogbreed",
            "download",
            "--url",
            url,
            "--dest",
            str(tmp_path),
            "--retries",
            "2",
            "--backoff",
            "0.01",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "download failed after 2 attempts" in result.stderr
