"""Decode / predict / encode and the model store, without a server."""

from __future__ import annotations

import base64
import io
import os
import json
import tarfile
import threading

import pytest
import torch
from PIL import Image

from dogbreed.artifact import make_metadata, save_artifact
from dogbreed.models import build_model
from dogbreed.serving.errors import InferenceError
from dogbreed.serving.inference import (Options, Predictor, check_accept, decode_request, encode_response,
                                        parse_custom_attributes)
from dogbreed.serving.store import ModelCache, list_targets, resolve_target, unpack

from tests.conftest import SAMPLE_DATA

JPEG = (SAMPLE_DATA / "test" / "001.Crimson_disc" / "Crimson_disc_00003.jpg").read_bytes()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _status(fn, *args):
    with pytest.raises(InferenceError) as info:
        fn(*args)
    return info.value.status, info.value.message


def test_raw_image_types_decode_to_one_image():
    for content_type, body in (("application/x-image", JPEG), ("image/jpeg", JPEG), ("image/png", _png())):
        images = decode_request(body, content_type, Options())
        assert len(images) == 1 and images[0].mode == "RGB"


def test_json_batch_and_its_options():
    options = Options()
    body = json.dumps({"instances": [base64.b64encode(JPEG).decode(), base64.b64encode(_png()).decode()],
                       "top_k": 2, "probabilities": True}).encode()
    assert len(decode_request(body, "application/json; charset=utf-8", options)) == 2
    assert options == Options(top_k=2, probabilities=True)
    assert len(decode_request(json.dumps([base64.b64encode(JPEG).decode()]).encode(), "application/json", Options())) == 1


@pytest.mark.parametrize("body, content_type, status, fragment", [
    (b"", "application/x-image", 400, "empty request body"),
    (b"hello, not an image", "image/jpeg", 400, "not an image"),
    (JPEG[: len(JPEG) // 2], "image/jpeg", 400, "truncated"),
    (b"{not json", "application/json", 400, "invalid JSON"),
    (b'["@@@not base64@@@"]', "application/json", 400, "instance 0 is not valid base64"),
    (b"[]", "application/json", 400, "non-empty list"),
    (b'{"instances": [1]}', "application/json", 400, "not a base64 string"),
    (JPEG, "text/plain", 415, "content type 'text/plain' is not supported"),
    (JPEG, None, 415, "not supported"),
])
def test_bad_input_gets_a_client_error(body, content_type, status, fragment):
    got_status, message = _status(decode_request, body, content_type, Options())
    assert got_status == status and fragment in message


def test_huge_image_is_refused_before_decoding(monkeypatch):
    import dogbreed.images

    monkeypatch.setattr(dogbreed.images, "MAX_PIXELS", 1000)
    status, message = _status(decode_request, _png(), "image/png", Options())
    assert status == 413 and "too large (40x30 pixels)" in message


def test_accept_and_custom_attributes():
    check_accept(None)
    check_accept("application/json")
    check_accept("text/html, */*;q=0.1")
    assert _status(check_accept, "text/csv")[0] == 406
    assert parse_custom_attributes("top_k=3, probabilities=true") == Options(top_k=3, probabilities=True)
    assert parse_custom_attributes("trace=abc;top_k=1") == Options(top_k=1)
    assert _status(parse_custom_attributes, "top_k=zero")[0] == 400


def _artifact(folder, classes=("001.Affenpinscher", "002.Afghan_hound", "003.Basenji")):
    model = build_model("mobilenet_v2", len(classes))
    save_artifact(folder, model.state_dict(), make_metadata(
        architecture="mobilenet_v2", class_folders=list(classes), input_size=32, mean=[0.5] * 3, std=[0.5] * 3,
        metrics={}, hyperparameters={}))
    return model


def test_predict_and_encode_top_k_and_probabilities(tmp_path):
    from dogbreed.artifact import load_artifact

    _artifact(tmp_path)
    predictor = Predictor(*load_artifact(tmp_path))
    probs = predictor.probabilities(decode_request(JPEG, "image/jpeg", Options()) * 2)
    assert probs.shape == (2, 3) and torch.allclose(probs.sum(1), torch.ones(2))
    answer = json.loads(encode_response(probs, predictor.labels, Options(top_k=2, probabilities=True), "m"))
    first = answer["results"][0]
    assert [p["probability"] for p in first["predictions"]] == sorted((p["probability"] for p in first["predictions"]), reverse=True)
    assert len(first["predictions"]) == 2 and len(first["probabilities"]) == 3
    assert answer["labels"] == ["Affenpinscher", "Afghan hound", "Basenji"]
    top = first["predictions"][0]
    assert answer["labels"][top["class_index"]] == top["label"]
    # k larger than the class count gives every class; no probabilities unless asked.
    plain = json.loads(encode_response(probs, predictor.labels, Options(top_k=10), None))
    assert len(plain["results"][0]["predictions"]) == 3 and "probabilities" not in plain["results"][0]


def _tar(path, members: dict[str, bytes], links: dict[str, str] | None = None):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)


def test_targets_resolve_inside_the_store_only(tmp_path):
    store = tmp_path / "store"
    (store / "dog-breed-classifier").mkdir(parents=True)
    _tar(store / "dog-breed-classifier" / "model.tar.gz", {"metadata.json": b"{}"})
    (tmp_path / "secret.tar.gz").write_bytes(b"x")
    (store / "escape").symlink_to(tmp_path)
    assert resolve_target(store, "dog-breed-classifier/model.tar.gz").name == "model.tar.gz"
    for target in ("../secret.tar.gz", "/etc/passwd", "a/../../secret.tar.gz", "escape/secret.tar.gz", "a\\b", ""):
        assert _status(resolve_target, store, target)[0] == 400, target
    status, message = _status(resolve_target, store, "nope/model.tar.gz")
    assert status == 404 and "dog-breed-classifier/model.tar.gz" in message
    assert list_targets(store) == ["dog-breed-classifier/model.tar.gz"]


def test_unpack_is_safe_and_happens_once(tmp_path):
    good = tmp_path / "good.tar.gz"
    cache = tmp_path / "unpacked"
    _tar(good, {"metadata.json": b"{}", "model.pth": b"w"})
    results = []
    threads = [threading.Thread(target=lambda: results.append(unpack(good, cache))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and sorted(p.name for p in results[0].iterdir()) == ["metadata.json", "model.pth"]
    assert [p for p in cache.iterdir() if p.is_dir()] == [results[0]]  # no staging folder left behind
    # A replaced archive is a new version, unpacked afresh.
    _tar(good, {"metadata.json": b"{}", "model.pth": b"w2"})
    os.utime(good, ns=(1, 1))
    assert unpack(good, cache) != results[0]

    for name, members, links in (("slip.tar.gz", {"../evil": b"x"}, None),
                                 ("abs.tar.gz", {"/tmp/evil-abs": b"x"}, None),
                                 ("link.tar.gz", {}, {"link": "/etc/passwd"})):
        _tar(tmp_path / name, members, links)
        assert _status(unpack, tmp_path / name, cache)[0] == 400
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2
    assert not (tmp_path / "evil").exists() and not os.path.exists("/tmp/evil-abs")
    (tmp_path / "corrupt.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    assert "cannot unpack corrupt.tar.gz" in _status(unpack, tmp_path / "corrupt.tar.gz", cache)[1]


def test_cache_evicts_the_least_recently_used(tmp_path):
    loads = []
    cache = ModelCache(2, lambda p: loads.append(p.name) or p.name)
    for key in ("a", "b", "a", "c", "a", "b"):
        cache.get(key, tmp_path / key)
    assert loads == ["a", "b", "c", "b"]
    assert cache.keys() == ["a", "b"]


def test_member_checks_hold_without_tarfiles_data_filter(tmp_path, monkeypatch):
    # Debian bookworm's Python 3.11.2 has no extraction filters: the hand-made checks must suffice alone.
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    cache = tmp_path / "unpacked"
    _tar(tmp_path / "inner-link.tar.gz", {"metadata.json": b"{}"}, links={"alias.json": "metadata.json"})
    assert (unpack(tmp_path / "inner-link.tar.gz", cache) / "alias.json").is_symlink()
    _tar(tmp_path / "relative-escape.tar.gz", {"a/b.txt": b"x"}, links={"a/up": "../../outside"})
    assert "links outside" in _status(unpack, tmp_path / "relative-escape.tar.gz", cache)[1]
    with tarfile.open(tmp_path / "fifo.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("pipe")
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    assert "special file" in _status(unpack, tmp_path / "fifo.tar.gz", cache)[1]
    with tarfile.open(tmp_path / "hardlink.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("hard")
        info.type = tarfile.LNKTYPE
        info.linkname = "../../etc/passwd"
        tar.addfile(info)
    assert "links outside" in _status(unpack, tmp_path / "hardlink.tar.gz", cache)[1]
