"""A real MMS process serving models that the real training code produced."""

from __future__ import annotations

import base64
import io
import json
import shutil
import tarfile
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from dogbreed.package import pack_artifact
from tests.conftest import SAMPLE_DATA
from tests.serving import running_server, stop_and_check_nothing_left

pytestmark = pytest.mark.integration

RESNET = "dog-breed-classifier/model.tar.gz"
MOBILE = "dog-breed-classifier-mobile/model.tar.gz"
TEST_IMAGES = sorted((SAMPLE_DATA / "test").rglob("*.jpg"))
IMAGE = (SAMPLE_DATA / "test" / "001.Crimson_disc" / "Crimson_disc_00003.jpg").read_bytes()
MAX_REQUEST_MB = 2


@pytest.fixture(scope="module")
def server(model_store, tmp_path_factory):
    with running_server(
        model_store, tmp_path_factory.mktemp("serve"), SAGEMAKER_MAX_PAYLOAD_IN_MB=str(MAX_REQUEST_MB)
    ) as server:
        yield server


def _label(path):
    return path.parent.name.split(".", 1)[1].replace("_", " ")


def test_each_target_answers_with_its_own_model(server):
    for target, arch_classes in ((RESNET, 4), (MOBILE, 4)):
        status, answer = server.invoke(IMAGE, target)
        assert status == 200, answer
        assert answer["model"] == target
        predictions = answer["results"][0]["predictions"]
        assert len(predictions) == arch_classes  # top_k defaults to 5; there are 4 classes
        assert abs(sum(p["probability"] for p in predictions) - 1) < 1e-3


def test_served_model_classifies_held_out_images(server):
    correct = 0
    for path in TEST_IMAGES:
        status, answer = server.invoke(path.read_bytes(), RESNET, content_type="image/jpeg")
        assert status == 200
        correct += answer["results"][0]["predictions"][0]["label"] == _label(path)
    assert correct / len(TEST_IMAGES) >= 0.8, f"{correct}/{len(TEST_IMAGES)}"


def test_sdk_local_runtime_client_as_in_the_readme(server):
    from sagemaker.core.local.local_session import LocalSagemakerRuntimeClient

    client = LocalSagemakerRuntimeClient(config={"local": {"serving_port": server.port}})
    path = SAMPLE_DATA / "test" / "003.Cobalt_triangle" / "Cobalt_triangle_00004.jpg"
    for target in (RESNET, MOBILE):
        response = client.invoke_endpoint(
            EndpointName="dog-breed-classifier-multi-endpoint",
            TargetModel=target,
            ContentType="application/x-image",
            Body=path.read_bytes(),
        )
        answer = json.loads(response["Body"].read())
        assert answer["model"] == target and answer["results"][0]["predictions"]
    assert answer["results"][0]["predictions"][0]["label"] in {
        "Cobalt triangle",
        "Emerald square",
        "Crimson disc",
        "Amber stripes",
    }


def test_json_batch_top_k_and_full_probabilities(server):
    body = json.dumps({"instances": [base64.b64encode(p.read_bytes()).decode() for p in TEST_IMAGES[:3]]}).encode()
    status, answer = server.invoke(
        body,
        RESNET,
        content_type="application/json",
        **{"X-Amzn-SageMaker-Custom-Attributes": "top_k=2,probabilities=true"},
    )
    assert status == 200, answer
    assert len(answer["results"]) == 3
    assert all(len(r["predictions"]) == 2 and len(r["probabilities"]) == 4 for r in answer["results"])
    assert answer["labels"] == ["Crimson disc", "Emerald square", "Cobalt triangle", "Amber stripes"]


def test_missing_header_with_two_targets_lists_them(server):
    status, answer = server.invoke(IMAGE)
    assert status == 400 and RESNET in answer["message"] and MOBILE in answer["message"]


def _big_png() -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (1200, 1200), bytes(range(256)) * (1200 * 1200 * 3 // 256)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "body, headers, status",
    [
        (b"", {"Content-Type": "application/x-image"}, 400),
        (b"this is not an image", {"Content-Type": "image/jpeg"}, 400),
        (IMAGE[: len(IMAGE) // 2], {"Content-Type": "image/jpeg"}, 400),
        (b"{broken", {"Content-Type": "application/json"}, 400),
        (b'["%%%"]', {"Content-Type": "application/json"}, 400),
        (IMAGE, {"Content-Type": "text/csv"}, 415),
        (IMAGE, {"Content-Type": "image/jpeg", "Accept": "text/csv"}, 406),
        (IMAGE, {"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Custom-Attributes": "top_k=-1"}, 400),
        (b"\0" * (MAX_REQUEST_MB * 1024 * 1024 + 10), {"Content-Type": "image/jpeg"}, 413),
    ],
)
def test_bad_input_gets_json_4xx_and_the_server_stays_healthy(server, body, headers, status):
    got, answer = server.json("POST", "/invocations", body, {"X-Amzn-SageMaker-Target-Model": RESNET, **headers})
    assert got == status
    assert answer["code"] == status and answer["message"]
    assert server.healthy()


def test_huge_image_dimensions_are_refused(server):
    # 1200x1200 is fine; a decompression bomb is not: craft a PNG header claiming 100000x100000.
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )
    status, answer = server.invoke(bomb, RESNET, content_type="image/png")
    assert status == 413 and "too large" in answer["message"]
    status, _ = server.invoke(_big_png(), RESNET, content_type="image/png")
    assert status == 200
    assert server.healthy()


def test_unknown_and_escaping_targets(server):
    status, answer = server.invoke(IMAGE, "no-such-model/model.tar.gz")
    assert status == 404 and RESNET in answer["message"]
    for target in ("../outside/model.tar.gz", "/etc/passwd", "dog-breed-classifier/../../x"):
        status, answer = server.invoke(IMAGE, target)
        assert status == 400, target
    assert server.healthy()


def test_broken_models_fail_alone(server, model_store, trained_models, tmp_path):
    broken = model_store / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "corrupt.tar.gz").write_bytes(b"\x1f\x8b\x08 definitely not a tarball")
    no_metadata = tmp_path / "no-metadata"
    no_metadata.mkdir()
    shutil.copy(trained_models["resnet18"] / "model.pth", no_metadata)
    with tarfile.open(broken / "no-metadata.tar.gz", "w:gz") as tar:
        tar.add(no_metadata / "model.pth", arcname="model.pth")
    slip = broken / "slip.tar.gz"
    with tarfile.open(slip, "w:gz") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    try:
        for target, fragment in (
            ("broken/corrupt.tar.gz", "cannot unpack"),
            ("broken/no-metadata.tar.gz", "metadata.json is missing"),
            ("broken/slip.tar.gz", "unsafe member path"),
        ):
            status, answer = server.invoke(IMAGE, target)
            assert status == 400 and fragment in answer["message"], answer
        assert not list(model_store.parent.rglob("escaped.txt"))
        assert server.invoke(IMAGE, RESNET)[0] == 200
        assert server.healthy()
    finally:
        shutil.rmtree(broken)


def test_concurrent_requests_over_both_targets(server):
    bodies = [p.read_bytes() for p in TEST_IMAGES]

    def one(i):
        return server.invoke(bodies[i % len(bodies)], (RESNET, MOBILE)[i % 2])[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(one, range(300)))
    assert statuses.count(200) == 300, {s: statuses.count(s) for s in set(statuses)}


def test_single_target_store_needs_no_header(trained_models, tmp_path):
    store = tmp_path / "store"
    pack_artifact(trained_models["mobilenet_v2"], store / "only" / "model.tar.gz")
    with running_server(store, tmp_path) as server:
        status, answer = server.invoke(IMAGE)
        assert status == 200 and answer["model"] == "only/model.tar.gz"
        took = stop_and_check_nothing_left(server)
    assert took < 15, f"SIGTERM took {took:.1f}s"


def test_multi_model_contract(trained_models, tmp_path):
    store = tmp_path / "mme-store"
    for arch in ("resnet18", "mobilenet_v2"):  # as SageMaker unpacks each model.tar.gz under /opt/ml/models
        shutil.copytree(trained_models[arch], store / arch / "model")
    with running_server(store, tmp_path, SAGEMAKER_MULTI_MODEL="true") as server:
        assert server.json("GET", "/models")[1]["models"] == []
        for name, arch in (("resnet", "resnet18"), ("mobile", "mobilenet_v2")):
            body = json.dumps({"model_name": name, "url": str(store / arch / "model")}).encode()
            status, answer = server.json("POST", "/models", body, {"Content-Type": "application/json"})
            assert status == 200, answer
        body = json.dumps({"model_name": "resnet", "url": str(store / "resnet18" / "model")}).encode()
        assert server.json("POST", "/models", body, {"Content-Type": "application/json"})[0] == 409
        missing = json.dumps({"model_name": "ghost", "url": str(store / "nowhere")}).encode()
        assert server.json("POST", "/models", missing, {"Content-Type": "application/json"})[0] == 404

        status, page = server.json("GET", "/models?limit=1")
        assert status == 200 and len(page["models"]) == 1 and page["nextPageToken"]
        status, rest = server.json("GET", f"/models?limit=1&next_page_token={page['nextPageToken']}")
        assert {m["modelName"] for m in page["models"] + rest["models"]} == {"resnet", "mobile"}
        status, described = server.json("GET", "/models/resnet")
        assert status == 200 and described["modelName"] == "resnet"
        assert described["workers"][0]["status"] == "READY"

        status, answer = server.json("POST", "/models/mobile/invoke", IMAGE, {"Content-Type": "application/x-image"})
        assert status == 200 and answer["results"][0]["predictions"]
        status, answer = server.json("POST", "/models/mobile/invoke", b"junk", {"Content-Type": "image/jpeg"})
        assert status == 400
        assert server.json("DELETE", "/models/mobile")[0] == 200
        assert server.json("GET", "/models/mobile")[0] == 404
        assert server.json("POST", "/models/mobile/invoke", IMAGE, {"Content-Type": "application/x-image"})[0] == 404
        assert server.healthy()


def test_the_onnx_variant_that_answered_is_named(server, trained_models):
    status, headers, data = server.request(
        "POST", "/invocations", IMAGE, {"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Target-Model": RESNET}
    )
    answer = json.loads(data)
    chosen = json.loads((trained_models["resnet18"] / "metadata.json").read_text())["onnx"]["serve"]
    assert status == 200 and answer["variant"] == chosen
    assert {k.lower(): v for k, v in headers.items()}["x-dogbreed-model-variant"] == chosen


def test_an_artifact_without_onnx_gets_400_naming_the_conversion(server, model_store, trained_models, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(trained_models["resnet18"] / "model.pth", old)
    metadata = json.loads((trained_models["resnet18"] / "metadata.json").read_text())
    del metadata["onnx"]  # as train_model.py wrote artifacts before it exported ONNX
    (old / "metadata.json").write_text(json.dumps(metadata))
    (model_store / "old").mkdir()
    try:
        with tarfile.open(model_store / "old" / "model.tar.gz", "w:gz") as tar:
            for name in ("model.pth", "metadata.json"):
                tar.add(old / name, arcname=name)
        status, answer = server.invoke(IMAGE, "old/model.tar.gz")
        assert status == 400 and "make export-onnx" in answer["message"]
        assert server.healthy()
    finally:
        shutil.rmtree(model_store / "old")
