"""Server settings from the sagemaker-inference environment, and the workflow's error mapping."""

from __future__ import annotations

import json
from pathlib import Path

from sagemaker_inference.environment import Environment

from dogbreed.serving import server, workflow
from dogbreed.serving.workflow import Workflow


def test_mms_properties_follow_the_sagemaker_variables(clean_env):
    clean_env.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "3")
    clean_env.setenv("SAGEMAKER_MODEL_SERVER_TIMEOUT", "120")
    clean_env.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "2")
    props = server.mms_properties(Path("/store"), "127.0.0.1", 8123, Environment())
    assert props["inference_address"] == props["management_address"] == "http://127.0.0.1:8123"
    assert props["default_workers_per_model"] == "3"
    assert props["default_response_timeout"] == "120"
    assert props["max_request_size"] == str(server.MMS_LIMIT_FACTOR * 2 * 1024 * 1024)
    assert props["default_service_handler"] == "dogbreed.serving.handler_service:handle"
    assert "UseContainerSupport" in props["vmargs"]


def test_defaults_and_modes(clean_env, tmp_path):
    env = Environment()
    assert server.worker_count(env) == 1
    assert server.max_payload_bytes(env) == 6 * 1024 * 1024
    assert not server.multi_model_enabled()
    clean_env.setenv("SAGEMAKER_MULTI_MODEL", "true")
    assert server.multi_model_enabled()
    clean_env.setenv("DOGBREED_MODEL_STORE", str(tmp_path))
    assert server.default_model_store() == tmp_path
    routing = server.mms_command(tmp_path / "c.properties", tmp_path, multi_model=False)
    assert routing[-2:] == ["--models", f"model={tmp_path.resolve()}"]
    assert "--models" not in server.mms_command(tmp_path / "c.properties", tmp_path, multi_model=True)


def test_out_of_memory_while_loading_is_507(clean_env, tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "metadata.json").write_text("{}")

    def exhausted(*_args, **_kwargs):
        raise MemoryError

    monkeypatch.setattr(workflow, "load_artifact", exhausted)
    response = Workflow(tmp_path).handle({"X-Amzn-SageMaker-Target-Model": "m", "Content-Type": "image/jpeg"}, b"x")
    assert response.status == 507 and json.loads(response.body)["type"] == "InsufficientMemory"


def test_payload_limit_is_checked_before_anything_else(clean_env, tmp_path):
    clean_env.setenv("DOGBREED_MAX_PAYLOAD_BYTES", "10")
    response = Workflow(tmp_path).handle({"Content-Type": "image/jpeg"}, b"x" * 11)
    assert response.status == 413 and "maximum is 10" in json.loads(response.body)["message"]
