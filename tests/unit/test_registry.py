"""ECR calls of make push, validated by botocore's Stubber against the real service model."""

from __future__ import annotations

import base64

import boto3
import pytest
from botocore.stub import Stubber

from dogbreed.workflows import registry
from dogbreed.workflows.registry import PushError, ecr_login, ensure_repository, split_image

URI = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/dogbreed-serve"


@pytest.fixture
def ecr():
    client = boto3.client("ecr", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def test_missing_repository_is_created_with_scan_on_push(ecr):
    client, stubber = ecr
    stubber.add_client_error(
        "describe_repositories",
        "RepositoryNotFoundException",
        expected_params={"registryId": "123456789012", "repositoryNames": ["dogbreed-serve"]},
    )
    stubber.add_response(
        "create_repository",
        {"repository": {"repositoryUri": URI}},
        expected_params={
            "registryId": "123456789012",
            "repositoryName": "dogbreed-serve",
            "imageScanningConfiguration": {"scanOnPush": True},
        },
    )
    assert ensure_repository(client, "dogbreed-serve", "123456789012") == URI


def test_existing_repository_is_reused(ecr):
    client, stubber = ecr
    stubber.add_response(
        "describe_repositories",
        {"repositories": [{"repositoryUri": URI}]},
        expected_params={"registryId": "123456789012", "repositoryNames": ["dogbreed-serve"]},
    )
    assert ensure_repository(client, "dogbreed-serve", "123456789012") == URI


def test_authorization_token_becomes_a_docker_login(ecr):
    client, stubber = ecr
    token = base64.b64encode(b"AWS:secret-password").decode()
    stubber.add_response(
        "get_authorization_token",
        {
            "authorizationData": [
                {"authorizationToken": token, "proxyEndpoint": "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"}
            ]
        },
        {"registryIds": ["123456789012"]},
    )
    login = ecr_login(client, "123456789012")
    assert (login.username, login.password) == ("AWS", "secret-password")
    assert login.endpoint.endswith("amazonaws.com")


def test_image_names_and_tags():
    assert split_image("dogbreed-train:abc123") == ("dogbreed-train", "abc123")
    assert split_image("127.0.0.1:5000/dogbreed-train") == ("127.0.0.1:5000/dogbreed-train", "latest")


def test_missing_region_and_credentials_are_one_line_errors(clean_env, monkeypatch, tmp_path):
    for name in (
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(PushError, match="no AWS region: set REGION"):
        registry.aws_clients(None)
    with pytest.raises(PushError, match="no AWS credentials"):
        registry.aws_clients("eu-west-1")


def test_missing_docker_engine_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker binary at all
    assert registry.run(["push", "--image", "dogbreed-train:x", "--registry", "127.0.0.1:5000"]) == 1
    assert capsys.readouterr().err == "push: error: no Docker engine is running (docker is not installed)\n"
