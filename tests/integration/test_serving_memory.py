"""A real MMS process under a memory limit: multi-model loads until 507, unloads that free, routing by memory."""

from __future__ import annotations

import base64
import io
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from dogbreed.package import pack_artifact
from tests.conftest import SAMPLE_DATA
from tests.serving import load_model, load_until_refused, running_server

pytestmark = pytest.mark.integration

IMAGE = (SAMPLE_DATA / "test" / "001.Crimson_disc" / "Crimson_disc_00003.jpg").read_bytes()
# Small enough that a few dozen sample models fill it, large enough for the server's reserve.
LIMIT_MB = 1000
MAX_LOADS = 120


def invoke(server, name):
    return server.json("POST", f"/models/{name}/invoke", IMAGE, {"Content-Type": "image/jpeg"})


@pytest.fixture(scope="module")
def mme(trained_models, tmp_path_factory):
    base = tmp_path_factory.mktemp("mme-memory")
    root = base / "models"
    shutil.copytree(trained_models["resnet18"], root / "resnet" / "model")
    # The same weights serving the fp32 graph, four times the int8 one: the largest model here.
    large = root / "large" / "model"
    shutil.copytree(trained_models["resnet18"], large)
    metadata = json.loads((large / "metadata.json").read_text())
    metadata["onnx"]["serve"] = "fp32"
    (large / "metadata.json").write_text(json.dumps(metadata))
    with running_server(root, base, SAGEMAKER_MULTI_MODEL="true", DOGBREED_MEMORY_LIMIT_MB=str(LIMIT_MB)) as server:
        yield server, root / "resnet" / "model"


def test_loads_past_the_budget_are_507_and_the_loaded_models_keep_answering(mme):
    server, folder = mme
    loaded, status, answer = load_until_refused(server, folder, "m", MAX_LOADS)
    assert status == 507, answer
    assert answer["code"] == 507 and answer["type"] == "InsufficientMemory" and "unload a model" in answer["message"]
    assert str(folder) not in answer["message"]
    assert len(loaded) >= 10, f"only {len(loaded)} models fitted in {LIMIT_MB} MiB"
    assert "Worker died" not in server.log()
    for name in loaded:
        status, result = invoke(server, name)
        assert status == 200 and result["model"] == name, result
    described = server.json("GET", f"/models/{loaded[0]}")[1]
    assert described["memoryBytes"] > 0 and described["workers"][0]["status"] == "READY"

    # Unload half: as many new loads fit again, by the books and by the memory really in use.
    half = loaded[: len(loaded) // 2]
    for name in half:
        assert server.json("DELETE", f"/models/{name}") == (200, {"status": f'Model "{name}" unregistered'})
        assert invoke(server, name)[0] == 404
    for i in range(len(half)):
        status, answer = load_model(server, f"again{i}", folder)
        assert status == 200, (i, answer)
    # Measured costs vary a little from load to load; the server fills up again and refuses, it does not die.
    more, status, _ = load_until_refused(server, folder, "more", MAX_LOADS)
    assert status == 507 and len(more) <= max(2, len(loaded) // 4), (len(loaded), len(more))
    assert server.healthy()
    listed = []
    token = None
    while True:
        page = server.json("GET", "/models?limit=7" + (f"&next_page_token={token}" if token else ""))[1]
        listed += [m["modelName"] for m in page["models"]]
        token = page.get("nextPageToken")
        if not token:
            break
    assert sorted(listed) == sorted(loaded[len(half) :] + [f"again{i}" for i in range(len(half))] + more)
    for name in listed:
        assert server.json("DELETE", f"/models/{name}")[0] == 200


def test_concurrent_invoke_and_unload_of_one_model_are_200_or_404(mme):
    server, folder = mme
    for round_ in range(5):
        name = f"race{round_}"
        assert load_model(server, name, folder)[0] == 200
        with ThreadPoolExecutor(8) as pool:
            invokes = [pool.submit(invoke, server, name) for _ in range(12)]
            unload = pool.submit(server.json, "DELETE", f"/models/{name}")
            statuses = [f.result()[0] for f in invokes]
        assert unload.result()[0] == 200
        assert set(statuses) <= {200, 404}, statuses
    assert server.healthy()


def test_requests_without_the_guard_cannot_reach_the_shared_worker(mme):
    server, folder = mme
    assert load_model(server, "guarded", folder)[0] == 200
    # Forged control headers are dropped by the guard; the shared model itself has no public name.
    forged = {"Content-Type": "image/jpeg", "X-Dogbreed-Control": "guess", "X-Dogbreed-Command": "unload"}
    assert server.json("POST", "/models/guarded/invoke", IMAGE, forged)[0] == 200
    for path in ("/invocations", "/predictions/model", "/models/model/invoke", "/model/predict"):
        status, answer = server.json("POST", path, IMAGE, forged | {"X-Dogbreed-Model": "guarded"})
        assert status in (400, 404), (path, status, answer)
    status, answer = server.json("POST", "/invocations?model_name=guarded", IMAGE, {"Content-Type": "image/jpeg"})
    assert status == 200 and answer["model"] == "guarded"
    assert server.json("DELETE", "/models/guarded")[0] == 200


def test_routing_mode_evicts_by_memory_and_answers_507_for_a_model_that_never_fits(trained_models, tmp_path_factory):
    base = tmp_path_factory.mktemp("routing-memory")
    store = base / "store"
    for i in range(12):
        pack_artifact(trained_models["resnet18"], store / f"r{i}" / "model.tar.gz")
    store_too_large_a_model(trained_models["resnet18"], store / "huge")
    # The smallest budget the server starts with, 64 MiB of models: about three sample models at a time.
    limit = 64 + server_reserve_mb()
    with running_server(store, base, DOGBREED_MEMORY_LIMIT_MB=str(limit)) as server:
        for _ in range(2):
            for i in range(12):
                status, answer = server.invoke(IMAGE, f"r{i}/model.tar.gz")
                assert status == 200, answer
            status, answer = server.invoke(IMAGE, "huge")
            assert status == 507 and answer["type"] == "InsufficientMemory", answer
            assert "model budget is 64 MiB" in answer["message"]
        assert "least recently used model" in server.log()
        assert "Worker died" not in server.log()
        assert server.healthy()


def store_too_large_a_model(artifact, folder):
    """The artifact serving its fp32 graph with 40 MB more of weights that nothing reads: more than a 64 MiB
    budget can ever hold, by the graph's size."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    shutil.copytree(artifact, folder)
    graph = onnx.load(folder / "model.onnx")
    graph.graph.initializer.append(numpy_helper.from_array(np.ones(10_000_000, np.float32), "unused_weights"))
    onnx.save(graph, folder / "model.onnx")
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["onnx"]["serve"] = "fp32"
    (folder / "metadata.json").write_text(json.dumps(metadata))


def server_reserve_mb() -> int:
    from sagemaker_inference.environment import Environment

    from dogbreed.serving import memory, server

    jvm = memory.jvm_sizes(1024 * memory.MiB, server.max_payload_bytes(Environment()))
    return memory.reserve_for(jvm, 1, 8_000_000).total // memory.MiB


def test_ping_answers_within_the_contract_while_a_large_model_loads(mme):
    server, folder = mme
    large = folder.parent.parent / "large" / "model"
    pings: list[tuple[float, float, int]] = []
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        loading = pool.submit(load_model, server, "large", large)
        while not loading.done():
            t0 = time.monotonic()
            status = server.request("GET", "/ping", timeout=5)[0]
            pings.append((t0, time.monotonic() - t0, status))
        status, answer = loading.result()
        finished = time.monotonic()
    assert status == 200, answer
    during = [p for p in pings if started <= p[0] and p[0] + p[1] <= finished]
    assert during, "no ping fell within the load"
    assert all(took < 2 and status == 200 for _, took, status in pings), pings
    assert server.json("DELETE", "/models/large")[0] == 200


def test_request_bodies_the_jvm_holds_are_bounded_and_answered_507_past_it(trained_models, tmp_path_factory):
    base = tmp_path_factory.mktemp("queued-bytes")
    store = base / "store"
    pack_artifact(trained_models["resnet18"], store / "r" / "model.tar.gz")
    # A JSON batch just under the 1 MB payload limit, of noisy photos that compress poorly: the JVM holds at most
    # four such bodies at once.
    buffer = io.BytesIO()
    Image.effect_noise((500, 500), 60).convert("RGB").save(buffer, format="JPEG", quality=90)
    photo = base64.b64encode(buffer.getvalue()).decode()
    body = json.dumps({"instances": [photo] * (900_000 // len(photo))}).encode()
    assert 600_000 < len(body) < 1024 * 1024
    headers = {"Content-Type": "application/json", "X-Amzn-SageMaker-Target-Model": "r/model.tar.gz"}
    with running_server(store, base, SAGEMAKER_MAX_PAYLOAD_IN_MB="1") as server:
        assert server.request("POST", "/invocations", body, headers)[0] == 200
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: server.request("POST", "/invocations", body, headers), range(32)))
        statuses = [status for status, _, _ in answers]
        assert set(statuses) <= {200, 507} and 507 in statuses and 200 in statuses, statuses
        refused = json.loads(next(data for status, _, data in answers if status == 507))
        assert refused["code"] == 507 and refused["type"] == "InsufficientMemory"
        # Past the payload limit: the JVM's own JSON 413, before it holds the body.
        status, _, data = server.request("POST", "/invocations", b"x" * (2 * 1024 * 1024), headers)
        assert status == 413 and json.loads(data)["type"] == "PayloadTooLarge"
        assert server.request("POST", "/invocations", body, headers)[0] == 200
        assert server.healthy()
