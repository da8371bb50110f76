"""Cloud workflow settings and request pieces that need no AWS: flags, environment fallbacks, ranges, names."""

from __future__ import annotations

import pytest

from dogbreed.workflows import parse_pairs
from dogbreed.workflows.aws import Aws, CloudError, split_s3_uri
from dogbreed.workflows.cloud import config, endpoint, tuning
from dogbreed.workflows.cloud.cli import get_args_parser


def test_settings_fall_back_to_the_environment_when_the_parser_is_built(monkeypatch):
    monkeypatch.setenv("SAGEMAKER_ROLE", "arn:aws:iam::123456789012:role/from-env")
    monkeypatch.setenv("SAGEMAKER_BUCKET", "env-bucket")
    monkeypatch.setenv("TRAIN_INSTANCE_TYPE", "ml.p3.2xlarge")
    monkeypatch.setenv("SAGEMAKER_SPOT", "true")
    args = get_args_parser().parse_args(["train-remote"])
    assert (args.role, args.bucket, args.instance_type, args.spot) == (
        "arn:aws:iam::123456789012:role/from-env",
        "env-bucket",
        "ml.p3.2xlarge",
        True,
    )
    flags = get_args_parser().parse_args(["train-remote", "--bucket", "flag-bucket", "--no-spot"])
    assert (flags.bucket, flags.spot) == ("flag-bucket", False)
    monkeypatch.delenv("SAGEMAKER_BUCKET")
    assert get_args_parser().parse_args(["deploy"]).bucket is None


def test_image_uris_default_to_what_make_push_pushed():
    class Account(Aws):
        def account_id(self):
            return "210987654321"

    aws = Account(None, None, None, None, region="eu-west-1")
    args = get_args_parser().parse_args(["deploy", "--tag", "abc1234"])
    assert config.image_uri(aws, args, "serve") == "210987654321.dkr.ecr.eu-west-1.amazonaws.com/dogbreed-serve:abc1234"
    args = get_args_parser().parse_args(["deploy", "--tag", "v2", "--registry", "registry.example.com/ml"])
    assert config.image_uri(aws, args, "train") == "registry.example.com/ml/dogbreed-train:v2"
    args = get_args_parser().parse_args(["deploy", "--serve-image", "x/y:z"])
    assert config.image_uri(aws, args, "serve") == "x/y:z"


def test_tuning_ranges_are_the_training_codes_recommended_ranges():
    ranges = tuning.parameter_ranges()
    named = {r["Name"] for kind in ranges.values() for r in kind}
    assert named == set(tuning.RECOMMENDED_RANGES)
    assert ranges["ContinuousParameterRanges"] == [
        {"Name": "learning-rate", "MinValue": "0.001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}
    ]
    assert ranges["CategoricalParameterRanges"] == [{"Name": "batch-size", "Values": ["16", "32", "64", "128", "256"]}]
    assert ranges["IntegerParameterRanges"] == []


def test_user_hyperparameters_drop_what_sagemaker_adds_and_unquote():
    assert tuning.user_hyperparameters(
        {
            "sagemaker_program": '"hpo.py"',
            "_tuning_objective_metric": "validation:accuracy",
            "batch-size": '"64"',
            "learning-rate": "0.004",
        }
    ) == {"batch-size": "64", "learning-rate": "0.004"}


@pytest.mark.parametrize("target", ["", "/abs/model.tar.gz", "../up/model.tar.gz", "a/./b.tar.gz", "model.zip"])
def test_targets_must_be_relative_archives(target):
    with pytest.raises(CloudError, match=r"relative path ending in \.tar\.gz"):
        config.check_target(target)


def test_pairs_and_s3_uris_are_checked():
    assert parse_pairs(["a=1", "b = x=y"], "-H", CloudError) == {"a": "1", "b": "x=y"}
    with pytest.raises(CloudError, match="-H must look like NAME=VALUE"):
        parse_pairs(["novalue"], "-H", CloudError)
    assert split_s3_uri("s3://bucket/a/b/") == ("bucket", "a/b/")
    for bad in ("bucket/key", "s3://", "s3:///key"):
        with pytest.raises(CloudError, match="not an S3 URI"):
            split_s3_uri(bad)


def test_own_names_match_only_this_endpoints_resources():
    pattern = endpoint.own_names("dogbreed", "mme")
    assert pattern.match("dogbreed-mme-20261122-120000")
    for other in (
        "dogbreed-prod-mme-20261122-120000",
        "dogbreed-mme-20261122-120000-x",
        "dogbreed-batch-20261122-120000",
    ):
        assert not pattern.match(other)


def test_the_packaging_cli_refuses_the_same_targets(tmp_path, capsys):
    from dogbreed import package

    with pytest.raises(SystemExit) as exit_info:
        package.run(["--model-dir", str(tmp_path), "--store", str(tmp_path / "store"), "--target", "a/../b.tar.gz"])
    assert exit_info.value.code == 2
    assert "--target must be a relative path ending in .tar.gz" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()
