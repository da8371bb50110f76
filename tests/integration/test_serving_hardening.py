"""Hostile and odd input against a real MMS process: the management API, archives, bodies, images, settings.

Every case ends with /ping still 200.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import SAMPLE_DATA, free_port
from tests.hostile_archives import bomb, symlink_chain
from tests.serving import running_server

pytestmark = pytest.mark.integration

RESNET = "dog-breed-classifier/model.tar.gz"
IMAGE = (SAMPLE_DATA / "test" / "001.Crimson_disc" / "Crimson_disc_00003.jpg").read_bytes()
JSON = {"Content-Type": "application/json"}


class FetchRecorder:
    """An HTTP server on 127.0.0.1 that records every request: a model URL MMS must never fetch."""

    def __init__(self):
        self.requests: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                recorder.requests.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"PK\x05\x06" + bytes(18))  # an empty zip: what an .mar download would get

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fetches():
    recorder = FetchRecorder()
    yield recorder
    recorder.close()


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory, model_store):
    """The documented store (docs/serving.md) plus hostile and broken archives."""
    store = tmp_path_factory.mktemp("hostile-store")
    shutil.copytree(model_store, store, dirs_exist_ok=True)
    (store / "broken").mkdir()
    (store / "broken" / "corrupt.tar.gz").write_bytes(b"\x1f\x8b\x08 definitely not a tarball")
    symlink_chain(store / "broken" / "chain.tar.gz")
    bomb(store / "broken" / "bomb.tar.gz", member_mb=120)  # about 120 kB packed
    return store


@pytest.fixture(scope="module")
def server(hostile_store, tmp_path_factory):
    with running_server(hostile_store, tmp_path_factory.mktemp("serve"), DOGBREED_MAX_MEMBER_MB="100") as server:
        yield server


# ---- 1. the management API -----------------------------------------------------------------


def test_routing_mode_has_no_management_api_on_the_serving_port(server, fetches):
    for method, path, body, headers in (
        ("POST", f"/models?model_name=x&url={fetches.url}/evil.mar&initial_workers=1&handler=evil:handle", None, {}),
        ("POST", "/models", json.dumps({"model_name": "x", "url": f"{fetches.url}/evil.mar"}).encode(), JSON),
        ("POST", "/models?model_name=fs&url=/", None, {}),
        ("GET", "/models", None, {}),
        ("PUT", "/models/model?min_worker=8", None, {}),
        ("DELETE", "/models/model", None, {}),
    ):
        status, _, _ = server.request(method, path, body, headers)
        assert 400 <= status < 500, (method, path, status)
    assert fetches.requests == []
    assert server.invoke(IMAGE, RESNET)[0] == 200  # the router is still registered
    assert server.healthy()


@pytest.fixture(scope="module")
def multi_model(trained_models, tmp_path_factory):
    """Multi-model mode over a root holding one artifact, a folder with a manifest and a module, and a way out."""
    base = tmp_path_factory.mktemp("mme")
    root = base / "models"
    shutil.copytree(trained_models["resnet18"], root / "resnet" / "model")
    evil = root / "evil" / "model"
    shutil.copytree(trained_models["resnet18"], evil)
    marker = base / "evil-ran"
    (evil / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\ndef handle(data, context):\n    return data\n"
    )
    (evil / "MAR-INF").mkdir()
    (evil / "MAR-INF" / "MANIFEST.json").write_text(
        json.dumps(
            {
                "specificationVersion": "1.0",
                "runtime": "python",
                "model": {"modelName": "evil", "handler": "evil:handle"},
            }
        )
    )
    (root / "out").symlink_to("/etc")
    with running_server(root, base, SAGEMAKER_MULTI_MODEL="true") as server:
        yield server, root, marker


def _register(server, body, headers=JSON):
    status, _, data = server.request("POST", "/models", json.dumps(body).encode(), headers)
    return status, json.loads(data)


def test_multi_model_mode_loads_only_local_folders_under_the_root(multi_model, fetches):
    server, root, _ = multi_model
    for url in (
        f"{fetches.url}/evil.mar",
        f"https{fetches.url[4:]}/m.tar.gz",
        "s3://bucket/model.tar.gz",
        "file:///etc",
        "/",
        "/etc",
        str(root),
        f"{root}/../models/resnet/model",
        str(root / "out"),
        str(root / "out" / "ssl"),
        "resnet/model",
        f"{root}/resnet/model\u0000x",
    ):
        status, answer = _register(server, {"model_name": "x", "url": url})
        assert status == 400, (url, answer)
        assert answer["message"]
    assert fetches.requests == []
    status, answer = _register(server, {"model_name": "x", "url": str(root / "missing")})
    assert status == 404
    assert server.json("GET", "/models")[1]["models"] == []
    assert server.healthy()


def test_the_request_and_the_folder_cannot_choose_the_handler(multi_model):
    server, root, marker = multi_model
    status, answer = _register(
        server, {"model_name": "evil", "url": str(root / "evil" / "model"), "handler": "evil:handle"}
    )
    assert status == 400 and "handler cannot be chosen" in answer["message"]
    # The folder's MANIFEST.json names evil:handle too; the project's handler serves it anyway.
    status, answer = _register(server, {"model_name": "evil", "url": str(root / "evil" / "model")})
    assert status == 200, answer
    status, answer = server.json("POST", "/models/evil/invoke", IMAGE, {"Content-Type": "application/x-image"})
    assert status == 200 and answer["results"][0]["predictions"]
    assert not marker.exists(), "a module from the model folder was imported"
    assert server.json("DELETE", "/models/evil")[0] == 200


def test_management_writes_from_web_pages_forms_and_scaling_are_refused(multi_model):
    server, root, _ = multi_model
    good = {"model_name": "resnet", "url": str(root / "resnet" / "model")}
    assert _register(server, good, {**JSON, "Origin": "http://evil.example"})[0] == 403
    form = f"/models?model_name=resnet&url={root}/resnet/model"
    assert server.request("POST", form, b"", {"Content-Type": "application/x-www-form-urlencoded"})[0] == 415
    assert _register(server, {**good, "initial_workers": 64})[0] == 400
    assert _register(server, {**good, "batch_size": 64})[0] == 400
    assert _register(server, {"model_name": "../x", "url": good["url"]})[0] == 400
    assert server.request("POST", "/models", b"[" * 60_000, JSON)[0] == 400
    assert server.request("POST", "/models", b"[" * 100_000, JSON)[0] == 413
    assert _register(server, good)[0] == 200
    assert server.request("PUT", "/models/resnet?min_worker=16&max_worker=16")[0] == 405
    assert server.request("DELETE", "/models/resnet", headers={"Origin": "http://evil.example"})[0] == 403
    described = server.json("GET", "/models/resnet")[1]
    assert len(described["workers"]) == 1
    assert server.json("DELETE", "/models/resnet")[0] == 200
    assert server.healthy()


# ---- 2. archives ---------------------------------------------------------------------------


def test_a_symlink_chain_archive_is_refused_and_writes_nothing(server, hostile_store, tmp_path_factory):
    status, answer = server.invoke(IMAGE, "broken/chain.tar.gz")
    assert status == 400 and "is a link" in answer["message"]
    assert not [p for p in Path(tmp_path_factory.getbasetemp()).rglob("escaped.txt")]
    assert server.healthy()


def test_a_bomb_is_refused_and_leaves_nothing(server):
    status, answer = server.invoke(IMAGE, "broken/bomb.tar.gz")
    assert status == 400 and answer["type"] == "ModelArchiveTooLarge"
    unpack_dir = Path(server.log_path.parent / f"unpacked-{server.port}")
    assert not [p for p in unpack_dir.rglob("*") if p.name == "model.pth" and p.stat().st_size > 100 * 2**20]
    assert not [p for p in unpack_dir.iterdir() if ".staging." in p.name]
    assert server.healthy()


def test_a_broken_archive_is_not_decompressed_again(server):
    for _ in range(4):
        status, answer = server.invoke(IMAGE, "broken/corrupt.tar.gz")
        assert status == 400 and "cannot unpack corrupt.tar.gz" in answer["message"]
    time.sleep(1)  # the worker's log lines reach the server log asynchronously
    assert server.log().count("unpacking corrupt.tar.gz") == 1
    assert server.healthy()


# ---- 3. bodies and images ------------------------------------------------------------------


@pytest.mark.parametrize("top_k", ["Infinity", "1e400", "-Infinity", "NaN", "true"])
def test_json_top_k_that_is_not_an_integer_is_400(server, top_k):
    body = f'{{"instances": ["{base64.b64encode(IMAGE).decode()}"], "top_k": {top_k}}}'.encode()
    status, answer = server.invoke(body, RESNET, content_type="application/json")
    assert status == 400 and "top_k" in answer["message"]
    assert server.healthy()


def test_deeply_nested_json_is_400(server):
    status, answer = server.invoke(b"[" * 100_000, RESNET, content_type="application/json")
    assert status == 400 and "nested too deeply" in answer["message"]
    assert server.healthy()


def test_query_parameters_are_not_headers(server):
    status, _, data = server.request(
        "POST",
        "/invocations?accept=x&x-amzn-sagemaker-target-model=../../etc",
        IMAGE,
        {"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Target-Model": RESNET},
    )
    assert status == 200 and json.loads(data)["model"] == RESNET
    status, _, data = server.request(
        "POST", "/invocations?x-amzn-sagemaker-target-model=" + RESNET, IMAGE, {"Content-Type": "image/jpeg"}
    )
    assert status == 400 and "set the X-Amzn-SageMaker-Target-Model header" in json.loads(data)["message"]
    assert server.healthy()


def _one_bit_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_a_batch_of_pixel_bombs_is_413(server):
    bomb = _one_bit_png(9400)  # 88 megapixels, about 11 kB
    assert len(bomb) < 20_000
    body = json.dumps({"instances": [base64.b64encode(bomb).decode()] * 4}).encode()
    status, answer = server.invoke(body, RESNET, content_type="application/json")
    assert status == 413 and answer["type"] == "TooManyPixels"
    assert server.healthy()


# ---- 4. real photos ------------------------------------------------------------------------


def _probabilities(server, body: bytes, content_type: str) -> torch.Tensor:
    status, answer = server.invoke(
        body, RESNET, content_type=content_type, **{"X-Amzn-SageMaker-Custom-Attributes": "probabilities=true"}
    )
    assert status == 200, answer
    return torch.tensor(answer["results"][0]["probabilities"])


def _encode(image: Image.Image, kind: str, orientation: int | None = None) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(buffer, format=kind, exif=exif, **({"quality": 95} if kind == "JPEG" else {}))
    return buffer.getvalue()


def test_exif_orientation_is_applied(server):
    """A phone held upright stores the picture turned 90 degrees, with EXIF orientation 6."""
    upright = Image.new("RGB", (96, 64), (128, 128, 128))
    upright.paste(Image.open(SAMPLE_DATA / "test" / "001.Crimson_disc" / "Crimson_disc_00003.jpg"), (0, 0))
    upright.paste(
        Image.open(SAMPLE_DATA / "test" / "003.Cobalt_triangle" / "Cobalt_triangle_00004.jpg").crop((0, 0, 32, 64)),
        (64, 0),
    )
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    phone_jpeg = _encode(stored, "JPEG", orientation=6)
    # What every viewer shows: the JPEG's own pixels, turned upright (PNG: no second lossy step).
    as_viewed = Image.open(io.BytesIO(phone_jpeg)).convert("RGB").transpose(Image.Transpose.ROTATE_270)
    served = _probabilities(server, phone_jpeg, "image/jpeg")
    upright_answer = _probabilities(server, _encode(as_viewed, "PNG"), "image/png")
    sideways_answer = _probabilities(server, _encode(stored, "JPEG"), "image/jpeg")
    assert torch.allclose(served, upright_answer, atol=2e-6), (served, upright_answer)
    # The stored pixels, read without their tag, get a clearly different answer: the tag is what changes it.
    assert (served - sideways_answer).abs().max() > 0.05, (served, sideways_answer)
    assert server.healthy()


# ---- 5. settings ---------------------------------------------------------------------------


def test_a_request_slower_than_the_timeout_gets_an_error_within_about_the_timeout(model_store, tmp_path):
    """20 plain 9000x9000 PNGs (250 kB each) take over 20 s to decode and resize; the timeout is 6 s."""
    buffer = io.BytesIO()
    Image.new("RGB", (9000, 9000), (120, 30, 200)).save(buffer, format="PNG")
    body = json.dumps({"instances": [base64.b64encode(buffer.getvalue()).decode()] * 20}).encode()
    with running_server(
        model_store,
        tmp_path,
        SAGEMAKER_MODEL_SERVER_TIMEOUT="6",
        SAGEMAKER_MAX_PAYLOAD_IN_MB="10",
        DOGBREED_MAX_REQUEST_PIXELS=str(10**10),
        DOGBREED_MAX_DECODED_PIXELS=str(10**8),
    ) as server:
        assert server.invoke(IMAGE, RESNET)[0] == 200  # loaded: the next request's time is all its own
        started = time.monotonic()
        status, _, _ = server.request(
            "POST", "/invocations", body, {**JSON, "X-Amzn-SageMaker-Target-Model": RESNET}, timeout=120
        )
        took = time.monotonic() - started
        assert status >= 500 and took < 15, (status, took)
        deadline = time.monotonic() + 60
        while server.invoke(IMAGE, RESNET)[0] != 200:  # MMS replaces the stuck worker
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert server.healthy()


def test_a_server_side_unpack_failure_is_500_and_names_no_path(model_store, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with running_server(model_store, tmp_path, DOGBREED_UNPACK_DIR=str(blocker / "unpacked")) as server:
        status, answer = server.invoke(IMAGE, RESNET)
        assert status == 500 and answer["message"] == "the server could not unpack the model"
        assert str(tmp_path) not in json.dumps(answer)
        assert server.healthy()


# ---- 6. error bodies -----------------------------------------------------------------------


def test_error_bodies_name_no_server_path(server, hostile_store, trained_models, tmp_path):
    no_metadata = hostile_store / "broken" / "no-metadata.tar.gz"
    with tarfile.open(no_metadata, "w:gz") as tar:
        tar.add(trained_models["resnet18"] / "model.pth", arcname="model.pth")
    bad_graph = hostile_store / "broken" / "bad-graph.tar.gz"
    served = json.loads((trained_models["resnet18"] / "metadata.json").read_text())["onnx"]
    served_file = served["variants"][served["serve"]]["file"]
    (tmp_path / served_file).write_bytes(b"not an ONNX graph")
    with tarfile.open(bad_graph, "w:gz") as tar:
        tar.add(trained_models["resnet18"] / "metadata.json", arcname="metadata.json")
        tar.add(tmp_path / served_file, arcname=served_file)
    bodies = []
    for target in (
        "broken/no-metadata.tar.gz",
        "broken/bad-graph.tar.gz",
        "broken/corrupt.tar.gz",
        "no/such/model.tar.gz",
    ):
        status, _, data = server.request(
            "POST", "/invocations", IMAGE, {"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Target-Model": target}
        )
        assert 400 <= status < 500, (target, status)
        bodies.append(data.decode())
    for body in bodies:
        for secret in ("/tmp", str(hostile_store), "unpacked", "dogbreed-mms", "/home", "/root"):
            assert secret not in body, body
    assert "metadata.json is missing" in bodies[0] and "not a loadable ONNX graph" in bodies[1]
    assert server.healthy()


def test_the_unpack_folder_stays_bounded_and_staging_is_cleaned_at_start(model_store, tmp_path):
    unpack_dir = tmp_path / "unpacked"
    abandoned = unpack_dir / ".0123abcd.staging.killed"  # what a worker killed mid-unpack leaves
    (abandoned / "sub").mkdir(parents=True)
    (abandoned / "sub" / "model.pth").write_bytes(b"half")
    with running_server(
        model_store, tmp_path, DOGBREED_UNPACK_DIR=str(unpack_dir), DOGBREED_UNPACK_CACHE_ENTRIES="1"
    ) as server:
        for target in (RESNET, "dog-breed-classifier-mobile/model.tar.gz", RESNET):
            assert server.invoke(IMAGE, target)[0] == 200
            assert not abandoned.exists()  # the worker removed it when it started
            unpacked = [p for p in unpack_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
            assert len(unpacked) == 1, unpacked
        assert server.healthy()
