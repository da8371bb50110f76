"""Server settings from the sagemaker-inference environment, and the workflow's error mapping."""

from __future__ import annotations

import json

import pytest
from sagemaker_inference.environment import Environment

from dogbreed.serving import memory, server, workflow
from dogbreed.serving.workflow import Workflow
from tests.conftest import SAMPLE_DATA

JPEG = (SAMPLE_DATA / "test" / "001.Crimson_disc" / "Crimson_disc_00003.jpg").read_bytes()


def test_mms_properties_follow_the_sagemaker_variables(clean_env):
    clean_env.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "3")
    clean_env.setenv("SAGEMAKER_MODEL_SERVER_TIMEOUT", "120")
    clean_env.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "2")
    jvm = memory.jvm_sizes(2048 * memory.MiB, server.max_payload_bytes(Environment()))
    props = server.mms_properties("127.0.0.1", 8123, Environment(), "unix:/private/management.sock", jvm)
    assert props["inference_address"] == "http://127.0.0.1:8123"
    assert props["management_address"] == "unix:/private/management.sock"
    assert props["default_workers_per_model"] == "3"
    # MMS 1.1.11 reads default_response_timeout in minutes: only the seconds setting may be written.
    assert props["default_response_timeout_seconds"] == "120" and "default_response_timeout" not in props
    assert props["max_request_size"] == str(2 * 1024 * 1024)  # the guard's aggregator answers past it with JSON
    assert props["default_service_handler"] == "dogbreed.serving.handler_service:handle"
    # The JVM's heap and direct buffers come from the memory budget: 2 GiB / 32, and four 2 MB request bodies.
    assert "-Xmx72m" in props["vmargs"] and "-XX:MaxDirectMemorySize=32m" in props["vmargs"]
    clean_env.setenv("SAGEMAKER_MODEL_SERVER_VMARGS", "-Xmx1g")
    assert server.mms_properties("h", 1, Environment(), "m", jvm)["vmargs"] == "-Xmx1g"


def test_defaults_and_modes(clean_env, tmp_path):
    env = Environment()
    assert server.worker_count() == 1
    for unusable in ("0", "-2", "two", " "):
        clean_env.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", unusable)
        assert server.worker_count() == 1
    clean_env.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "4")
    assert server.worker_count() == 4
    assert server.max_payload_bytes(env) == 6 * 1024 * 1024
    assert not server.multi_model_enabled()
    clean_env.setenv("SAGEMAKER_MULTI_MODEL", "true")
    assert server.multi_model_enabled()
    clean_env.setenv("DOGBREED_MODEL_STORE", str(tmp_path))
    assert server.default_model_store() == tmp_path
    routing = server.mms_command(tmp_path / "c.properties", tmp_path, "model")
    assert routing[-2:] == ["--models", f"model={tmp_path.resolve()}"]


def test_the_default_model_store_follows_the_sagemaker_layout(clean_env, tmp_path):
    clean_env.delenv("DOGBREED_MODEL_STORE", raising=False)
    clean_env.delenv("SM_MODEL_DIR", raising=False)
    clean_env.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    assert server.default_model_store() == tmp_path / "model"  # nothing there yet
    (tmp_path / "models").mkdir()
    assert server.default_model_store() == tmp_path / "models"  # a multi-model endpoint's folder
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "metadata.json").write_text("{}")
    assert server.default_model_store() == tmp_path / "model"  # one unpacked artifact comes first


def test_out_of_memory_while_loading_is_507(clean_env, tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "metadata.json").write_text("{}")

    def exhausted(*_args, **_kwargs):
        raise MemoryError

    monkeypatch.setattr(workflow, "read_metadata", exhausted)
    headers = {"X-Amzn-SageMaker-Target-Model": "m", "Content-Type": "image/jpeg"}
    response = Workflow(tmp_path).handle(headers, JPEG)
    assert response.status == 507 and json.loads(response.body)["type"] == "InsufficientMemory"


def test_payload_limit_is_checked_before_anything_else(clean_env, tmp_path):
    clean_env.setenv("DOGBREED_MAX_PAYLOAD_BYTES", "10")
    response = Workflow(tmp_path).handle({"Content-Type": "image/jpeg"}, b"x" * 11)
    assert response.status == 413 and "maximum is 10" in json.loads(response.body)["message"]


def test_routing_mode_puts_the_management_api_on_a_private_socket(clean_env, tmp_path):
    import argparse

    args = argparse.Namespace(host="127.0.0.1", port=8123, model_store=tmp_path)
    jvm = memory.jvm_sizes(1024 * memory.MiB, 1024)
    routing = (server.write_config(args, tmp_path, Environment(), False, jvm)).read_text()
    assert f"management_address=unix:{tmp_path}/management.sock" in routing
    multi = server.write_config(args, tmp_path, Environment(), True, jvm).read_text()
    assert "management_address=http://127.0.0.1:8123" in multi


def test_the_native_default_host_is_loopback(clean_env):
    clean_env.delenv("DOGBREED_BIND_HOST", raising=False)
    assert server.get_args_parser().parse_args([]).host == "127.0.0.1"
    clean_env.setenv("DOGBREED_BIND_HOST", "0.0.0.0")
    assert server.get_args_parser().parse_args([]).host == "0.0.0.0"


def test_the_server_refuses_to_start_without_its_guard_or_with_a_manifest_in_the_store(clean_env, tmp_path):
    clean_env.setenv("DOGBREED_MMS_GUARD_DIR", str(tmp_path / "no-guard"))
    with pytest.raises(server.ServeError, match="MMS guard is not built"):
        server.check_setup(tmp_path, multi_model=True)
    guard = tmp_path / "guard"
    (guard / server.GUARD_CLASS).parent.mkdir(parents=True)
    (guard / server.GUARD_CLASS).write_bytes(b"")
    clean_env.setenv("DOGBREED_MMS_GUARD_DIR", str(guard))
    store = tmp_path / "store"
    (store / "model-a").mkdir(parents=True)
    server.check_setup(store, multi_model=False)
    (store / "model-a" / "MANIFEST.json").write_text('{"model": {"handler": "evil:handle"}}')
    with pytest.raises(server.ServeError, match="MMS manifest"):
        server.check_setup(store, multi_model=False)
    assert server.run(["--model-store", str(store)]) == 2
    clean_env.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "2")
    with pytest.raises(server.ServeError, match="shares one worker"):
        server.check_setup(store, multi_model=True)


def test_a_limit_too_small_for_the_reserve_stops_the_start_with_one_line(clean_env, tmp_path):
    clean_env.setenv("DOGBREED_MEMORY_LIMIT_MB", "300")
    with pytest.raises(server.ServeError, match=r"leaves .* MiB for models"):
        server.memory_plan(Environment())
    clean_env.setenv("DOGBREED_MEMORY_LIMIT_MB", "1024")
    reading, jvm, reserve, models = server.memory_plan(Environment())
    assert reading.source == "DOGBREED_MEMORY_LIMIT_MB" and reading.limit == 1024 * memory.MiB
    assert models == reading.limit - reserve.total and jvm.heap == (32 + 24) * memory.MiB


def test_query_parameters_are_never_taken_for_headers():
    from dogbreed.serving.handler_service import request_headers

    # What MMS hands the handler for POST /invocations?accept=x&x-amzn-sagemaker-target-model=../../etc
    merged = {
        "accept": {"content-type": None},
        "x-amzn-sagemaker-target-model": {"content-type": None},
        "Content-Type": "image/jpeg",
        "body": {"content-type": "image/jpeg"},
    }
    assert request_headers(merged) == {"Content-Type": "image/jpeg"}
    assert request_headers(None) == {}
