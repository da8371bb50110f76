"""The model store without a server: target resolution, hostile archives, the unpack and target caches."""

from __future__ import annotations

import errno
import fcntl
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from dogbreed.serving import archive as archive_module
from dogbreed.serving import store
from dogbreed.serving.archive import ArchiveLimits
from dogbreed.serving.cache import ModelCache
from dogbreed.serving.errors import InferenceError
from dogbreed.serving.memory import LoadCost
from dogbreed.serving.store import (
    CacheLimits,
    TargetListing,
    clean_staging,
    evict,
    list_targets,
    resolve_target,
    unpacked,
)
from dogbreed.serving.workflow import Workflow
from tests.conftest import REPO_ROOT, SAMPLE_DATA
from tests.hostile_archives import bomb, symlink_chain

JPEG = (SAMPLE_DATA / "test" / "001.Crimson_disc" / "Crimson_disc_00003.jpg").read_bytes()


def _status(fn, *args, **kwargs):
    with pytest.raises(InferenceError) as info:
        fn(*args, **kwargs)
    return info.value.status, info.value.message


def unpack(archive: Path, cache: Path, limits: ArchiveLimits | None = None, **kwargs) -> Path:
    with unpacked(archive, cache, limits, **kwargs) as folder:
        return folder


def _tar(
    path: Path, members: dict[str, bytes], links: dict[str, str] | None = None, kind: bytes = tarfile.SYMTYPE
) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tar.addfile(info)
    return path


def _folders(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.is_dir())


def test_targets_resolve_inside_the_store_only(tmp_path):
    store_root = tmp_path / "store"
    (store_root / "dog-breed-classifier").mkdir(parents=True)
    _tar(store_root / "dog-breed-classifier" / "model.tar.gz", {"metadata.json": b"{}"})
    (tmp_path / "secret.tar.gz").write_bytes(b"x")
    (store_root / "escape").symlink_to(tmp_path)
    assert resolve_target(store_root, "dog-breed-classifier/model.tar.gz").name == "model.tar.gz"
    for target in ("../secret.tar.gz", "/etc/passwd", "a/../../secret.tar.gz", "escape/secret.tar.gz", "a\\b", ""):
        assert _status(resolve_target, store_root, target)[0] == 400, target
    status, message = _status(resolve_target, store_root, "nope/model.tar.gz")
    assert status == 404 and "dog-breed-classifier/model.tar.gz" in message
    assert list_targets(store_root) == ["dog-breed-classifier/model.tar.gz"]


def test_the_target_listing_is_not_walked_on_every_request(tmp_path, monkeypatch):
    walks = []
    real = store.list_targets
    monkeypatch.setattr(store, "list_targets", lambda root: walks.append(root) or real(root))
    _tar(tmp_path / "a.tar.gz", {"metadata.json": b"{}"})
    listing = TargetListing(tmp_path, ttl=0.5)
    for _ in range(50):
        assert listing() == ["a.tar.gz"]
        assert _status(resolve_target, tmp_path, "missing.tar.gz", listing)[0] == 404
    assert len(walks) == 1
    _tar(tmp_path / "b.tar.gz", {"metadata.json": b"{}"})
    time.sleep(0.6)
    assert listing() == ["a.tar.gz", "b.tar.gz"] and len(walks) == 2


def test_unpack_happens_once_and_a_replaced_archive_is_a_new_version(tmp_path):
    good = _tar(tmp_path / "good.tar.gz", {"metadata.json": b"{}", "sub/model.pth": b"w", "./x.txt": b"1"})
    cache = tmp_path / "unpacked"
    results = []
    threads = [threading.Thread(target=lambda: results.append(unpack(good, cache))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert sorted(str(p.relative_to(results[0])) for p in results[0].rglob("*")) == [
        "metadata.json",
        "sub",
        "sub/model.pth",
        "x.txt",
    ]
    assert _folders(cache) == [results[0].name]  # no staging folder left behind
    _tar(good, {"metadata.json": b"{}", "model.pth": b"w2"})
    os.utime(good, ns=(1, 1))
    assert unpack(good, cache) != results[0]


@pytest.mark.parametrize("python_has_data_filter", [True, False])
def test_every_link_and_special_member_refuses_the_archive(tmp_path, monkeypatch, python_has_data_filter):
    if not python_has_data_filter:  # Debian bookworm's Python 3.11.2: tarfile has no extraction filters
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    cache = tmp_path / "unpacked"
    outside = tmp_path / "outside"
    outside.mkdir()
    cases = {
        "slip": ({"../evil": b"x"}, None, tarfile.SYMTYPE, "unsafe member path"),
        "absolute": ({str(outside / "abs"): b"x"}, None, tarfile.SYMTYPE, "unsafe member path"),
        "link-out": ({}, {"link": "/etc/passwd"}, tarfile.SYMTYPE, "is a link"),
        "inner-link": ({"metadata.json": b"{}"}, {"alias.json": "metadata.json"}, tarfile.SYMTYPE, "is a link"),
        "hard-link": ({"metadata.json": b"{}"}, {"hard": "metadata.json"}, tarfile.LNKTYPE, "is a link"),
    }
    for name, (members, links, kind, fragment) in cases.items():
        status, message = _status(unpack, _tar(tmp_path / f"{name}.tar.gz", members, links, kind), cache)
        assert status == 400 and fragment in message, name
    with tarfile.open(tmp_path / "fifo.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("pipe")
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    assert "not a regular file" in _status(unpack, tmp_path / "fifo.tar.gz", cache)[1]
    assert _folders(cache) == [] and list(outside.iterdir()) == []


def test_the_symlink_chain_that_escapes_a_lexical_check_is_refused(tmp_path):
    """d/y -> . ; d/x -> y/y/y/../../../../ ; d/x/file: each name alone looks harmless."""
    victim = tmp_path / "victim"
    victim.mkdir()
    cache = victim / "deep" / "er" / "unpacked"
    archive = symlink_chain(tmp_path / "chain.tar.gz", payload="file")
    status, message = _status(unpack, archive, cache)
    assert status == 400 and "is a link" in message
    assert [p for p in victim.rglob("*") if p.name == "file"] == []
    assert _folders(cache) == []


def test_archives_past_their_bounds_are_refused_and_leave_nothing(tmp_path):
    cache = tmp_path / "unpacked"
    limits = ArchiveLimits(members=5, member_bytes=1000, total_bytes=2500)
    many = _tar(tmp_path / "many.tar.gz", {f"f{i}": b"x" for i in range(6)})
    big = _tar(tmp_path / "big.tar.gz", {"a": b"\0" * 1001})
    total = _tar(tmp_path / "total.tar.gz", {"a": b"\0" * 900, "b": b"\0" * 900, "c": b"\0" * 900})
    for archive, fragment in ((many, "more than 5 members"), (big, "the limit is 1000"), (total, "over 2500 bytes")):
        status, message = _status(unpack, archive, cache, limits)
        assert status == 400 and fragment in message
        assert _folders(cache) == [], "a refused archive left files behind"
    assert unpack(_tar(tmp_path / "ok.tar.gz", {"a": b"\0" * 900, "b": b"\0" * 900}), cache, limits).is_dir()


def test_a_small_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    """50 MB of zeros packs into about 50 kB; the size in its header refuses it before inflating."""
    archive = bomb(tmp_path / "bomb.tar.gz", member_mb=50)
    assert archive.stat().st_size < 200_000
    copied = []
    monkeypatch.setattr(archive_module, "_copy_member", lambda *args: copied.append(args))
    monkeypatch.setenv("DOGBREED_MAX_MEMBER_MB", "10")
    status, message = _status(unpack, archive, tmp_path / "unpacked")
    assert status == 400 and "DOGBREED_MAX_MEMBER_MB" in message and copied == []


def test_server_side_failures_are_5xx_without_paths(tmp_path, monkeypatch):
    archive = _tar(tmp_path / "ok.tar.gz", {"metadata.json": b"{}"})
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    status, message = _status(unpack, archive, blocker / "unpacked")  # its parent is a file: ENOTDIR
    assert status == 500 and "/" not in message

    def full_disk(fd, mode):
        os.close(fd)
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path))

    monkeypatch.setattr(archive_module.os, "fdopen", full_disk)
    status, message = _status(unpack, archive, tmp_path / "unpacked")
    assert status == 507 and str(tmp_path) not in message
    assert _folders(tmp_path / "unpacked") == []


def test_a_real_write_failure_is_500(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse the write, as a full disk would."""
    archive = _tar(tmp_path / "ok.tar.gz", {"model.pth": b"\1" * 200_000})
    script = f"""
import resource, signal, json
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
from dogbreed.serving.archive import ArchiveLimits
from dogbreed.serving.errors import InferenceError
from dogbreed.serving.store import unpacked
try:
    with unpacked(Path({str(archive)!r}), Path({str(tmp_path / "unpacked")!r})):
        print(json.dumps([200, ""]))
except InferenceError as exc:
    print(json.dumps([exc.status, exc.message]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    status, message = json.loads(result.stdout)
    assert status == 500 and message == "the server could not unpack the model", result.stderr
    assert _folders(tmp_path / "unpacked") == []


def test_the_unpack_cache_keeps_to_its_bounds_and_spares_what_is_in_use(tmp_path):
    cache = tmp_path / "unpacked"
    archives = [_tar(tmp_path / f"m{i}.tar.gz", {"model.pth": bytes(1000 + i)}) for i in range(4)]
    limits = CacheLimits(total_bytes=10**9, entries=2)
    first = unpack(archives[0], cache, cache_limits=limits)
    os.utime(first, (1, 1))  # the oldest
    second = unpack(archives[1], cache, cache_limits=limits)
    os.utime(second, (2, 2))
    # Another worker is loading the oldest: it stays, and the next oldest goes instead.
    with open(store._lock_path(cache, first.name), "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        third = unpack(archives[2], cache, cache_limits=limits)
    assert _folders(cache) == sorted([first.name, third.name])
    os.utime(third, None)
    unpack(archives[3], cache, cache_limits=limits)
    assert first.name not in _folders(cache) and len(_folders(cache)) == 2
    by_bytes = CacheLimits(total_bytes=1500, entries=100)
    assert evict(cache, by_bytes, keep=set()) and len(_folders(cache)) == 1


def test_staging_left_by_a_killed_worker_is_removed_at_start_up(tmp_path):
    cache = tmp_path / "unpacked"
    cache.mkdir()
    abandoned = cache / f".abc{store.STAGING_MARK}x1"
    busy = cache / f".def{store.STAGING_MARK}x2"
    for folder in (abandoned, busy):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "half.pth").write_bytes(b"partial")
    with open(store._lock_path(cache, "def"), "a+") as held:  # a live worker is still unpacking this one
        fcntl.flock(held, fcntl.LOCK_EX)
        assert clean_staging(cache) == [abandoned.name]
    assert not abandoned.exists() and busy.exists()


def test_model_cache_is_lru():
    loads = []
    cache = ModelCache(capacity=2)
    for key in ("a", "b", "a", "c", "a", "b"):
        cache.get_or_load(key, lambda admit, k=key: admit(LoadCost(1, 1)) or loads.append(k) or k)
    assert loads == ["a", "b", "c", "b"] and cache.keys() == ["a", "b"]


def test_a_broken_archive_is_refused_once_until_it_changes(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("DOGBREED_UNPACK_DIR", str(tmp_path / "unpacked"))
    root = tmp_path / "store"
    root.mkdir()
    (root / "broken.tar.gz").write_bytes(b"\x1f\x8b\x08 not a tarball at all")
    _tar(root / "no-metadata.tar.gz", {"model.pth": b"w"})
    workflow = Workflow(root)
    headers = {"X-Amzn-SageMaker-Target-Model": "broken.tar.gz", "Content-Type": "image/jpeg"}
    with caplog.at_level(logging.INFO, logger="dogbreed.serving.store"):
        answers = [workflow.handle(headers, JPEG) for _ in range(3)]
        assert {a.status for a in answers} == {400}
        assert caplog.text.count("unpacking broken.tar.gz") == 1
        _tar(root / "broken.tar.gz", {"model.pth": b"w"})
        os.utime(root / "broken.tar.gz", ns=(5, 5))
        answer = workflow.handle(headers, JPEG)
        assert caplog.text.count("unpacking broken.tar.gz") == 2
    message = json.loads(answer.body)["message"]
    assert answer.status == 400 and "metadata.json is missing" in message
    assert str(tmp_path) not in message and "/metadata.json" not in message


@pytest.mark.parametrize(
    "content_type, body, status",
    [
        ("image/jpeg", b"not an image", 400),
        ("application/json", b'{"instances": ["@@@"]}', 400),
        ("text/plain", b"hello", 415),
        ("image/jpeg", b"", 400),
    ],
)
def test_a_malformed_request_to_a_cold_target_is_refused_before_any_unpacking(
    tmp_path, caplog, monkeypatch, content_type, body, status
):
    """The request is parsed in full before the model it names is resolved: a bad body costs no unpack."""
    monkeypatch.setenv("DOGBREED_UNPACK_DIR", str(tmp_path / "unpacked"))
    root = tmp_path / "store"
    root.mkdir()
    _tar(root / "model.tar.gz", {"metadata.json": b"{}"})
    headers = {"X-Amzn-SageMaker-Target-Model": "model.tar.gz", "Content-Type": content_type}
    with caplog.at_level(logging.INFO, logger="dogbreed.serving.store"):
        answer = Workflow(root).handle(headers, body)
        assert answer.status == status
        assert "unpacking" not in caplog.text
        image_headers = {**headers, "Content-Type": "image/jpeg"}
        assert Workflow(root).handle(image_headers, JPEG).status == 400  # the same target with an image: unpacked
        assert "unpacking model.tar.gz" in caplog.text
