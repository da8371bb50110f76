"""The cloud workflows end to end: each command's real code, SageMaker calls checked by botocore's Stubber
against the real service model, S3 and STS served by moto's emulator on 127.0.0.1.

The tests spell out the exact requests: image URIs, ranges and scaling, metric
definitions, Debugger rules, Mode=MultiModel, S3 keys, TargetModel values and
content types.
"""

from __future__ import annotations

import datetime
import io
import json
import subprocess
import sys
import tarfile

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from dogbreed.labels import display_label
from dogbreed.training.metrics import METRIC_DEFINITIONS
from dogbreed.workflows.aws import Aws
from dogbreed.workflows.cloud import config
from dogbreed.workflows.cloud.cli import run as cloud_main
from dogbreed.workflows.cloud.config import DEFAULT_TARGETS
from tests.conftest import REPO_ROOT, SAMPLE_DATA
from tests.serving import running_server

# moto's emulator and a real MMS run as processes: integration, so -m "not integration" leaves these out.
pytestmark = pytest.mark.integration

REGION = "us-east-1"
ACCOUNT = "123456789012"  # the emulator's account
ROLE = f"arn:aws:iam::{ACCOUNT}:role/dogbreed-sagemaker"
BUCKET = "dogbreed-test-bucket"
ECR = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
TRAIN_IMAGE = f"{ECR}/dogbreed-train:abc1234"
SERVE_IMAGE = f"{ECR}/dogbreed-serve:abc1234"
RULES_IMAGE = "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest"
STAMP = "20261122-120000"
NOW = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC)
ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
SETTINGS = ["--role", ROLE, "--bucket", BUCKET, "--tag", "abc1234", "--poll", "0"]
TEST_IMAGE = SAMPLE_DATA / "test" / "001.Crimson_disc" / "Crimson_disc_00001.jpg"
VARIANT = {
    "ServiceNamespace": "sagemaker",
    "ResourceId": "endpoint/dogbreed/variant/AllTraffic",
    "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
}
DESCRIBE_TARGET = {
    "ServiceNamespace": "sagemaker",
    "ResourceIds": ["endpoint/dogbreed/variant/AllTraffic"],
    "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
}
SCALABLE_TARGET = {
    **VARIANT,
    "MinCapacity": 1,
    "MaxCapacity": 4,
    "RoleARN": f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/sagemaker",
    "CreationTime": datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC),
}


class Capture:
    """Stands for one request parameter: matches anything, and keeps it for exact assertions afterwards."""

    def __init__(self):
        self.value = None

    def __eq__(self, other):
        self.value = other
        return True

    def __ne__(self, other):
        return not self.__eq__(other)


@pytest.fixture(scope="module")
def emulator():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


class Cloud:
    """The stubbed SageMaker clients, the emulated S3, and the CLI run against them."""

    def __init__(self, aws: Aws, capsys):
        self.aws = aws
        self.sagemaker = Stubber(aws.sagemaker)
        self.runtime = Stubber(aws.runtime)
        self.scaling = Stubber(aws.autoscaling)
        self.capsys = capsys
        self.sagemaker.activate()
        self.runtime.activate()
        self.scaling.activate()

    def expect(self, method: str, params: dict, response: dict | None = None) -> None:
        self.sagemaker.add_response(method, response or {}, params)

    def run(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()  # drop what the fixtures printed (the SDK's config log lines on import)
        code = cloud_main(list(argv), aws=self.aws)
        out, err = self.capsys.readouterr()
        return code, out, err

    def done(self) -> None:
        self.sagemaker.assert_no_pending_responses()
        self.runtime.assert_no_pending_responses()
        self.scaling.assert_no_pending_responses()

    def scalable_target(self, registered: bool) -> None:
        """Application Auto Scaling's answer on whether the endpoint's variant is a scalable target."""
        found = [SCALABLE_TARGET] if registered else []
        self.scaling.add_response("describe_scalable_targets", {"ScalableTargets": found}, DESCRIBE_TARGET)

    def keys(self, prefix: str = "", bucket: str = BUCKET) -> list[str]:
        listed = self.aws.s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for obj in listed.get("Contents", []))

    def body(self, key: str) -> bytes:
        return self.aws.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


@pytest.fixture
def aws_cloud(emulator, monkeypatch, capsys):
    import requests

    for name in (
        "AWS_PROFILE",
        "SAGEMAKER_ROLE",
        "SAGEMAKER_BUCKET",
        "SAGEMAKER_PREFIX",
        "SAGEMAKER_ENDPOINT",
        "REGISTRY",
        "TAG",
        "TRAIN_IMAGE",
        "SERVE_IMAGE",
        "TRAIN_IMAGE_URI",
        "SERVE_IMAGE_URI",
        "SAGEMAKER_SPOT",
        "SAGEMAKER_DATA",
        "TRAIN_INSTANCE_TYPE",
        "SERVE_INSTANCE_TYPE",
        "TRANSFORM_INSTANCE_TYPE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", emulator)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", emulator)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setattr(config, "stamp", lambda: STAMP)
    requests.post(f"{emulator}/moto-api/reset", timeout=30).raise_for_status()
    boto_session = boto3.Session(region_name=REGION)
    sagemaker_client = boto_session.client("sagemaker")
    runtime = boto_session.client("sagemaker-runtime")
    aws = Aws(
        boto_session=boto_session,
        sagemaker=sagemaker_client,
        runtime=runtime,
        s3=boto_session.client("s3"),
        region=REGION,
        autoscaling=boto_session.client("application-autoscaling"),
    )
    aws.s3.create_bucket(Bucket=BUCKET)
    return Cloud(aws, capsys)


# --- responses (complete enough for the service model's validation) ---------------------------------------------


def tuning_job(name: str, status: str, best: dict | None = None) -> dict:
    described = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobArn": f"{ARN}:hyper-parameter-tuning-job/{name}",
        "HyperParameterTuningJobConfig": {"Strategy": "Bayesian", "ResourceLimits": {"MaxParallelTrainingJobs": 2}},
        "HyperParameterTuningJobStatus": status,
        "CreationTime": NOW,
        "TrainingJobStatusCounters": {},
        "ObjectiveStatusCounters": {},
    }
    if best:
        described["BestTrainingJob"] = best
    return described


def best_summary(job: str, tuned: dict, value: float) -> dict:
    return {
        "TrainingJobName": job,
        "TrainingJobArn": f"{ARN}:training-job/{job}",
        "CreationTime": NOW,
        "TrainingJobStatus": "Completed",
        "TunedHyperParameters": tuned,
        "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "validation:accuracy", "Value": value},
    }


def training_job(name: str, status: str, hyperparameters: dict | None = None, **extra) -> dict:
    return {
        "TrainingJobName": name,
        "TrainingJobArn": f"{ARN}:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/dogbreed/training/{name}/output/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": "Completed" if status == "Completed" else "Training",
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ResourceConfig": {"VolumeSizeInGB": 30},
        "StoppingCondition": {},
        "CreationTime": NOW,
        "HyperParameters": hyperparameters or {},
        **extra,
    }


def endpoint(status: str, config: str = f"dogbreed-mme-{STAMP}", reason: str | None = None) -> dict:
    described = {
        "EndpointName": "dogbreed",
        "EndpointArn": f"{ARN}:endpoint/dogbreed",
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
    }
    if reason:
        described["FailureReason"] = reason
    return described


def not_found(cloud_: Cloud, method: str, what: str) -> None:
    cloud_.sagemaker.add_client_error(
        method,
        service_error_code="ValidationException",
        service_message=f"Could not find {what}.",
        http_status_code=400,
    )


def invocation_answer(target: str, labels: list[str]) -> dict:
    payload = json.dumps(
        {
            "model": target,
            "results": [
                {
                    "predictions": [
                        {"label": label, "class_index": i, "probability": round(0.9 / (i + 1), 6)}
                        for i, label in enumerate(labels)
                    ]
                }
            ],
        }
    ).encode()
    return {"Body": StreamingBody(io.BytesIO(payload), len(payload)), "ContentType": "application/json"}


# --- tuning ---------------------------------------------------------------------------------------------------------


def test_hpo_uploads_the_data_tunes_with_the_training_ranges_and_prints_the_best(aws_cloud):
    name = "dogbreed-hpo-test"
    default_bucket = f"sagemaker-{REGION}-{ACCOUNT}"
    data = f"s3://{default_bucket}/dogbreed/data/sample/"
    aws_cloud.expect(
        "create_hyper_parameter_tuning_job",
        {
            "HyperParameterTuningJobName": name,
            "HyperParameterTuningJobConfig": {
                "Strategy": "Bayesian",
                "ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2},
                "TrainingJobEarlyStoppingType": "Auto",
                "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:accuracy"},
                "ParameterRanges": {
                    "ContinuousParameterRanges": [
                        {"Name": "learning-rate", "MinValue": "0.001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}
                    ],
                    "CategoricalParameterRanges": [{"Name": "batch-size", "Values": ["16", "32", "64", "128", "256"]}],
                    "IntegerParameterRanges": [],
                },
            },
            "TrainingJobDefinition": {
                "StaticHyperParameters": {"epochs": "4", "model": "resnet50", "sagemaker_program": "hpo.py"},
                "RoleArn": ROLE,
                "OutputDataConfig": {"S3OutputPath": f"s3://{default_bucket}/dogbreed/tuning"},
                "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
                "HyperParameterTuningResourceConfig": {
                    "InstanceCount": 1,
                    "InstanceType": "ml.g4dn.xlarge",
                    "VolumeSizeInGB": 30,
                },
                "AlgorithmSpecification": {
                    "TrainingInputMode": "File",
                    "TrainingImage": TRAIN_IMAGE,
                    "MetricDefinitions": METRIC_DEFINITIONS,
                },
                "InputDataConfig": [
                    {
                        "ChannelName": "training",
                        "DataSource": {
                            "S3DataSource": {
                                "S3DataType": "S3Prefix",
                                "S3Uri": data,
                                "S3DataDistributionType": "FullyReplicated",
                            }
                        },
                    }
                ],
                "Environment": {"SAGEMAKER_PROGRAM": "hpo.py"},
            },
        },
        {"HyperParameterTuningJobArn": f"{ARN}:hyper-parameter-tuning-job/{name}"},
    )
    best = best_summary("dogbreed-hpo-test-003-abcd", {"learning-rate": "0.0042", "batch-size": "64"}, 0.81)
    aws_cloud.expect(
        "describe_hyper_parameter_tuning_job", {"HyperParameterTuningJobName": name}, tuning_job(name, "InProgress")
    )
    aws_cloud.expect(
        "describe_hyper_parameter_tuning_job",
        {"HyperParameterTuningJobName": name},
        tuning_job(name, "Completed", best),
    )
    aws_cloud.expect(
        "describe_hyper_parameter_tuning_job",
        {"HyperParameterTuningJobName": name},
        tuning_job(name, "Completed", best),
    )
    aws_cloud.expect(
        "describe_training_job",
        {"TrainingJobName": best["TrainingJobName"]},
        training_job(
            best["TrainingJobName"],
            "Completed",
            {
                "epochs": "4",
                "model": "resnet50",
                "learning-rate": "0.0042",
                "batch-size": '"64"',
                "sagemaker_program": "hpo.py",
                "_tuning_objective_metric": "validation:accuracy",
            },
        ),
    )

    # No --bucket: the SDK's default bucket, created in the account the emulator's STS reports.
    code, out, err = aws_cloud.run(
        "hpo",
        "--role",
        ROLE,
        "--tag",
        "abc1234",
        "--poll",
        "0",
        "--job-name",
        name,
        "--data",
        str(SAMPLE_DATA),
        "--max-jobs",
        "4",
        "--max-parallel-jobs",
        "2",
        "-H",
        "epochs=4",
        "-H",
        "model=resnet50",
    )
    assert code == 0, err
    aws_cloud.done()
    local_files = sorted(p.relative_to(SAMPLE_DATA).as_posix() for p in SAMPLE_DATA.rglob("*") if p.is_file())
    assert aws_cloud.keys("dogbreed/data/sample/", bucket=default_bucket) == [
        f"dogbreed/data/sample/{f}" for f in local_files
    ]
    assert f"best training job: {best['TrainingJobName']}" in out
    assert "objective: validation:accuracy = 0.81" in out
    assert 'hyperparameters: {"batch-size": "64", "epochs": "4", "learning-rate": "0.0042", "model": "resnet50"}' in out


def test_best_of_a_missing_tuning_job_is_a_one_line_error(aws_cloud):
    aws_cloud.sagemaker.add_client_error(
        "describe_hyper_parameter_tuning_job",
        service_error_code="ResourceNotFound",
        service_message="Amazon SageMaker can't find a tuning job with name nope",
        http_status_code=400,
        expected_params={"HyperParameterTuningJobName": "nope"},
    )
    code, _out, err = aws_cloud.run("best", "--tuning-job", "nope")
    assert code == 1
    assert (
        err == "best: error: tuning job 'nope' not found in us-east-1: "
        "Amazon SageMaker can't find a tuning job with name nope\n"
    )
    aws_cloud.done()


def test_hpo_no_wait_returns_after_creating_the_job_and_syncs_only_missing_files(aws_cloud, tmp_path):
    data = tmp_path / "dogImages"
    for split in ("train", "valid", "test"):
        (data / split / "001.A").mkdir(parents=True)
        (data / split / "001.A" / "a.jpg").write_bytes(b"jpeg " + split.encode())
    aws_cloud.aws.s3.put_object(Bucket=BUCKET, Key="dogbreed/data/dogImages/train/001.A/a.jpg", Body=b"jpeg train")
    request = Capture()
    aws_cloud.expect(
        "create_hyper_parameter_tuning_job",
        {"HyperParameterTuningJobName": "t1", "HyperParameterTuningJobConfig": request, "TrainingJobDefinition": ANY},
        {"HyperParameterTuningJobArn": f"{ARN}:hyper-parameter-tuning-job/t1"},
    )
    code, out, err = aws_cloud.run(
        "hpo",
        *SETTINGS,
        "--job-name",
        "t1",
        "--data",
        str(data),
        "--no-wait",
        "--objective",
        "validation:loss",
        "--early-stopping",
        "Off",
    )
    assert code == 0, err
    aws_cloud.done()
    assert request.value["HyperParameterTuningJobObjective"] == {"Type": "Minimize", "MetricName": "validation:loss"}
    assert request.value["TrainingJobEarlyStoppingType"] == "Off"
    assert "2 file(s) uploaded, 1 already there" in out
    assert "make best TUNING_JOB=t1" in out


# --- training -------------------------------------------------------------------------------------------------------


def test_train_remote_with_the_best_hyperparameters_debugger_rules_profiler_and_spot(aws_cloud):
    job = "dogbreed-train-test"
    aws_cloud.aws.s3.put_object(Bucket=BUCKET, Key="datasets/dogImages/train/001.A/a.jpg", Body=b"x")
    best = best_summary("hpo-007", {"learning-rate": "0.0042", "batch-size": '"64"'}, 0.81)
    aws_cloud.expect(
        "describe_hyper_parameter_tuning_job",
        {"HyperParameterTuningJobName": "hpo"},
        tuning_job("hpo", "Completed", best),
    )
    aws_cloud.expect(
        "describe_training_job",
        {"TrainingJobName": "hpo-007"},
        training_job(
            "hpo-007",
            "Completed",
            {
                "epochs": "3",
                "learning-rate": "0.0042",
                "batch-size": '"64"',
                "sagemaker_program": '"hpo.py"',
                "_tuning_objective_metric": '"validation:accuracy"',
            },
        ),
    )
    hook = Capture()
    output = f"s3://{BUCKET}/dogbreed/training"
    aws_cloud.expect(
        "create_training_job",
        {
            "TrainingJobName": job,
            "AlgorithmSpecification": {
                "TrainingInputMode": "File",
                "TrainingImage": TRAIN_IMAGE,
                "MetricDefinitions": METRIC_DEFINITIONS,
            },
            "RoleArn": ROLE,
            "InputDataConfig": [
                {
                    "ChannelName": "training",
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": f"s3://{BUCKET}/datasets/dogImages/",
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                }
            ],
            "OutputDataConfig": {"S3OutputPath": output},
            "ResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.p3.2xlarge", "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 14400},
            # Tuned values, then the explicit -H on top.
            "HyperParameters": {"learning-rate": "0.0042", "batch-size": "64", "epochs": "10"},
            "Environment": {"SAGEMAKER_PROGRAM": "train_model.py"},
            "EnableManagedSpotTraining": True,
            "CheckpointConfig": {"S3Uri": f"s3://{BUCKET}/dogbreed/checkpoints/{job}"},
            "DebugRuleConfigurations": [
                {
                    "RuleConfigurationName": name,
                    "RuleEvaluatorImage": RULES_IMAGE,
                    "RuleParameters": {"rule_to_invoke": name},
                }
                for name in (
                    "LossNotDecreasing",
                    "Overfit",
                    "Overtraining",
                    "VanishingGradient",
                    "PoorWeightInitialization",
                )
            ],
            "DebugHookConfig": hook,
            "ProfilerRuleConfigurations": [
                {
                    "RuleConfigurationName": "ProfilerReport",
                    "RuleEvaluatorImage": RULES_IMAGE,
                    "RuleParameters": {"rule_to_invoke": "ProfilerReport"},
                }
            ],
            "ProfilerConfig": {
                "S3OutputPath": output,
                "DisableProfiler": False,
                "ProfilingIntervalInMilliseconds": 500,
            },
        },
        {"TrainingJobArn": f"{ARN}:training-job/{job}"},
    )
    aws_cloud.expect("describe_training_job", {"TrainingJobName": job}, training_job(job, "InProgress"))
    finished = training_job(
        job,
        "Completed",
        EnableManagedSpotTraining=True,
        BillableTimeInSeconds=410,
        TrainingTimeInSeconds=1200,
        DebugHookConfig={"S3OutputPath": output},
        ProfilerConfig={"S3OutputPath": output},
        DebugRuleEvaluationStatuses=[
            {"RuleConfigurationName": "LossNotDecreasing", "RuleEvaluationStatus": "NoIssuesFound"},
            {"RuleConfigurationName": "Overfit", "RuleEvaluationStatus": "IssuesFound"},
        ],
        ProfilerRuleEvaluationStatuses=[
            {"RuleConfigurationName": "ProfilerReport", "RuleEvaluationStatus": "InProgress"}
        ],
    )
    aws_cloud.expect("describe_training_job", {"TrainingJobName": job}, finished)
    aws_cloud.expect("describe_training_job", {"TrainingJobName": job}, finished)

    code, out, err = aws_cloud.run(
        "train-remote",
        *SETTINGS,
        "--job-name",
        job,
        "--from-tuning-job",
        "hpo",
        "--data",
        f"s3://{BUCKET}/datasets/dogImages",
        "--instance-type",
        "ml.p3.2xlarge",
        "--spot",
        "--max-run",
        "7200",
        "-H",
        "epochs=10",
    )
    assert code == 0, err
    aws_cloud.done()
    collections = {c["CollectionName"]: c["CollectionParameters"] for c in hook.value["CollectionConfigurations"]}
    assert hook.value["S3OutputPath"] == output and len(hook.value["CollectionConfigurations"]) == 4
    assert collections == {
        "losses": {"save_interval": "100"},
        "weights": {"save_interval": "100"},
        "gradients": {"save_interval": "100"},
        "relu_input": {"include_regex": ".*relu_input", "save_interval": "100"},
    }
    assert f"model: {output}/{job}/output/model.tar.gz" in out
    assert f"debugger tensors: {output}/{job}/debug-output/" in out
    assert f"profiler report: {output}/{job}/rule-output/ProfilerReport/profiler-output/profiler-report.html" in out
    assert "rule Overfit: IssuesFound" in out and "spot: billed 410 s of 1200 s" in out


def test_train_remote_access_denied_is_a_one_line_error(aws_cloud):
    aws_cloud.aws.s3.put_object(Bucket=BUCKET, Key="data/train/001.A/a.jpg", Body=b"x")
    aws_cloud.sagemaker.add_client_error(
        "create_training_job",
        service_error_code="AccessDeniedException",
        http_status_code=400,
        service_message=f"User: arn:aws:iam::{ACCOUNT}:user/dev is not authorized to perform: iam:PassRole",
    )
    code, _out, err = aws_cloud.run("train-remote", *SETTINGS, "--data", f"s3://{BUCKET}/data/")
    assert code == 1
    assert err.count("\n") == 1 and err.startswith(
        "train-remote: error: AWS CreateTrainingJob failed: AccessDeniedException: User:"
    )
    assert "iam:PassRole" in err and "IAM permissions" in err
    aws_cloud.done()


def test_training_job_failure_reason_ends_in_a_clear_message(aws_cloud):
    aws_cloud.aws.s3.put_object(Bucket=BUCKET, Key="data/train/001.A/a.jpg", Body=b"x")
    aws_cloud.expect("create_training_job", ANY_TRAINING_JOB, {"TrainingJobArn": f"{ARN}:training-job/j"})
    aws_cloud.expect(
        "describe_training_job",
        {"TrainingJobName": "j"},
        training_job("j", "Failed", FailureReason="AlgorithmError: data: train/ has no class folders"),
    )
    code, _out, err = aws_cloud.run(
        "train-remote", *SETTINGS, "--job-name", "j", "--data", f"s3://{BUCKET}/data/", "-H", "epochs=1"
    )
    assert code == 1
    assert err.count("\n") == 1 and "train/ has no class folders" in err
    aws_cloud.done()


def test_train_remote_without_debugger_sends_no_rules_and_returns_without_waiting(aws_cloud):
    aws_cloud.aws.s3.put_object(Bucket=BUCKET, Key="data/train/001.A/a.jpg", Body=b"x")
    aws_cloud.expect(
        "create_training_job",
        {
            "TrainingJobName": "j",
            "AlgorithmSpecification": ANY,
            "RoleArn": ROLE,
            "InputDataConfig": ANY,
            "OutputDataConfig": ANY,
            "ResourceConfig": ANY,
            "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
            "HyperParameters": {"epochs": "1"},
            "Environment": {"SAGEMAKER_PROGRAM": "train_model.py"},
            "ProfilerConfig": {"DisableProfiler": True},
        },
        {"TrainingJobArn": f"{ARN}:training-job/j"},
    )
    code, out, err = aws_cloud.run(
        "train-remote",
        *SETTINGS,
        "--job-name",
        "j",
        "--data",
        f"s3://{BUCKET}/data/",
        "-H",
        "epochs=1",
        "--no-debugger",
        "--no-wait",
    )
    assert code == 0, err
    aws_cloud.done()
    assert "make training-result TRAINING_JOB=j" in out


@pytest.mark.parametrize("flags, count", [(["--instance-count", "2"], 2), (["--distributed"], 1)])
def test_train_remote_across_instances_or_gpus_asks_the_image_for_torchrun(aws_cloud, flags, count):
    aws_cloud.aws.s3.put_object(Bucket=BUCKET, Key="data/train/001.A/a.jpg", Body=b"x")
    aws_cloud.expect(
        "create_training_job",
        {
            "TrainingJobName": "j",
            "AlgorithmSpecification": ANY,
            "RoleArn": ROLE,
            "InputDataConfig": ANY,
            "OutputDataConfig": ANY,
            "ResourceConfig": {"InstanceCount": count, "InstanceType": "ml.g5.12xlarge", "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
            "HyperParameters": {"epochs": "1", "sagemaker_torch_distributed_enabled": "true"},
            "Environment": {"SAGEMAKER_PROGRAM": "train_model.py"},
            "ProfilerConfig": {"DisableProfiler": True},
        },
        {"TrainingJobArn": f"{ARN}:training-job/j"},
    )
    code, _out, err = aws_cloud.run(
        "train-remote",
        *SETTINGS,
        "--job-name",
        "j",
        "--data",
        f"s3://{BUCKET}/data/",
        "--instance-type",
        "ml.g5.12xlarge",
        "-H",
        "epochs=1",
        "--no-debugger",
        "--no-wait",
        *flags,
    )
    assert code == 0, err
    aws_cloud.done()


def test_train_remote_refuses_a_zero_instance_count_before_any_call(aws_cloud):
    code, _, err = aws_cloud.run("train-remote", *SETTINGS, "--data", f"s3://{BUCKET}/data/", "--instance-count", "0")
    assert code == 1 and err == "train-remote: error: --instance-count must be at least 1, got 0\n"
    aws_cloud.done()


def test_training_result_reports_a_stopped_job_and_a_missing_one(aws_cloud):
    aws_cloud.expect(
        "describe_training_job",
        {"TrainingJobName": "old"},
        training_job(
            "old",
            "Stopped",
            FailureReason="MaxWaitTimeInSeconds exceeded",
            EnableManagedSpotTraining=True,
            BillableTimeInSeconds=300,
            TrainingTimeInSeconds=900,
        ),
    )
    code, out, err = aws_cloud.run("training-result", "--training-job", "old")
    assert code == 0, err
    assert out.splitlines()[:3] == [
        "training job: old (Stopped)",
        "failure: MaxWaitTimeInSeconds exceeded",
        f"model: s3://{BUCKET}/dogbreed/training/old/output/model.tar.gz",
    ]
    assert "spot: billed 300 s of 900 s" in out
    aws_cloud.sagemaker.add_client_error(
        "describe_training_job",
        service_error_code="ValidationException",
        service_message="Requested resource not found.",
        http_status_code=400,
    )
    code, _, err = aws_cloud.run("training-result", "--training-job", "gone")
    assert code == 1 and err == (
        "training-result: error: AWS DescribeTrainingJob failed: ValidationException: Requested resource not found.\n"
    )
    aws_cloud.done()


ANY_TRAINING_JOB = {
    key: ANY
    for key in (
        "TrainingJobName",
        "AlgorithmSpecification",
        "RoleArn",
        "InputDataConfig",
        "OutputDataConfig",
        "ResourceConfig",
        "StoppingCondition",
        "HyperParameters",
        "Environment",
        "DebugRuleConfigurations",
        "DebugHookConfig",
        "ProfilerRuleConfigurations",
        "ProfilerConfig",
    )
}


# --- settings -------------------------------------------------------------------------------------------------------


def test_missing_bucket_and_data_are_one_line_errors(aws_cloud):
    code, _, err = aws_cloud.run("train-remote", "--role", ROLE, "--bucket", "no-such-bucket", "--data", "s3://x/y/")
    assert (
        code == 1
        and err.startswith("train-remote: error: S3 bucket 'no-such-bucket' does not exist")
        and "SAGEMAKER_BUCKET" in err
        and err.count("\n") == 1
    )
    code, _, err = aws_cloud.run("train-remote", *SETTINGS, "--data", f"s3://{BUCKET}/empty/")
    assert (
        code == 1
        and err
        == f"train-remote: error: no objects under s3://{BUCKET}/empty/: "
        "upload the dataset there, or pass a local folder\n"
    )
    code, _, err = aws_cloud.run("hpo", *SETTINGS)
    assert code == 1 and "no training data: set --data" in err
    aws_cloud.done()


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/nonexistent",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "dogbreed", "cloud", *args],
        cwd=REPO_ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_credentials_region_and_role_name_what_to_set():
    result = _cli("teardown", AWS_REGION="eu-west-1")
    assert result.returncode == 1 and result.stderr == (
        "teardown: error: no AWS credentials: configure a profile (AWS_PROFILE) "
        "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY\n"
    )
    result = _cli("teardown", AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b")
    assert result.returncode == 1 and result.stderr.startswith("teardown: error: no AWS region: set --region")
    result = _cli(
        "deploy",
        "--model",
        "dog-breed-classifier/model.tar.gz=x.tar.gz",
        AWS_REGION="eu-west-1",
        AWS_ACCESS_KEY_ID="a",
        AWS_SECRET_ACCESS_KEY="b",
    )
    assert result.returncode == 1 and result.stderr == (
        "deploy: error: no IAM role: set --role, ROLE (make) or SAGEMAKER_ROLE to a SageMaker execution role ARN\n"
    )
    result = _cli("hpo", "--role", "my-role", AWS_REGION="eu-west-1", AWS_ACCESS_KEY_ID="a", AWS_SECRET_ACCESS_KEY="b")
    assert result.returncode == 1 and "--role must be an IAM role ARN" in result.stderr


def test_make_targets_pass_settings_and_fail_in_one_line():
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/nonexistent",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    result = subprocess.run(
        ["make", "--no-print-directory", "teardown", "REGION=eu-west-1"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "teardown: error: no AWS credentials" in result.stderr and "Traceback" not in result.stderr


# --- endpoint -------------------------------------------------------------------------------------------------------


def expect_new_endpoint_resources(aws_cloud, name: str, instance_type: str = "ml.m5.large") -> None:
    aws_cloud.expect(
        "create_model",
        {
            "ModelName": name,
            "ExecutionRoleArn": ROLE,
            "PrimaryContainer": {
                "Image": SERVE_IMAGE,
                "Mode": "MultiModel",
                "ModelDataUrl": f"s3://{BUCKET}/dogbreed/models/",
            },
        },
        {"ModelArn": f"{ARN}:model/{name}"},
    )
    aws_cloud.expect(
        "create_endpoint_config",
        {
            "EndpointConfigName": name,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "InitialVariantWeight": 1,
                    "InitialInstanceCount": 1,
                    "InstanceType": instance_type,
                }
            ],
        },
        {"EndpointConfigArn": f"{ARN}:endpoint-config/{name}"},
    )


def expect_endpoint_created(aws_cloud, name: str, instance_type: str = "ml.m5.large") -> None:
    """Expect a first deploy's calls up to waiting: no endpoint yet, a new model and config, the endpoint."""
    not_found(aws_cloud, "describe_endpoint", 'endpoint "dogbreed"')
    expect_new_endpoint_resources(aws_cloud, name, instance_type)
    aws_cloud.expect(
        "create_endpoint",
        {"EndpointName": "dogbreed", "EndpointConfigName": name},
        {"EndpointArn": f"{ARN}:endpoint/dogbreed"},
    )


def second_deploy(aws_cloud, monkeypatch, first: str, registered: bool) -> str:
    """Expect a redeploy's first calls, up to the in-place update: a new model and config under a new stamp,
    the variant's scaling looked up (and deregistered when ``registered``). Returns the new name."""
    second_stamp = "20261123-090000"
    second = f"dogbreed-mme-{second_stamp}"
    monkeypatch.setattr(config, "stamp", lambda: second_stamp)
    aws_cloud.expect("describe_endpoint", {"EndpointName": "dogbreed"}, endpoint("InService", first))
    expect_new_endpoint_resources(aws_cloud, second)
    aws_cloud.scalable_target(registered=registered)
    if registered:
        aws_cloud.scaling.add_response("deregister_scalable_target", {}, VARIANT)
    aws_cloud.expect(
        "update_endpoint",
        {"EndpointName": "dogbreed", "EndpointConfigName": second},
        {"EndpointArn": f"{ARN}:endpoint/dogbreed"},
    )
    return second


def test_deploy_uploads_both_models_creates_a_multi_model_endpoint_then_updates_it_in_place(
    aws_cloud, model_store, monkeypatch
):
    first = f"dogbreed-mme-{STAMP}"
    models = [f"--model={t}={model_store / t}" for t in DEFAULT_TARGETS]
    expect_endpoint_created(aws_cloud, first, "ml.c5.xlarge")
    aws_cloud.expect("describe_endpoint", {"EndpointName": "dogbreed"}, endpoint("Creating", first))
    aws_cloud.expect("describe_endpoint", {"EndpointName": "dogbreed"}, endpoint("InService", first))
    code, out, err = aws_cloud.run("deploy", *SETTINGS, *models, "--instance-type", "ml.c5.xlarge")
    assert code == 0, err
    aws_cloud.done()
    assert aws_cloud.keys("dogbreed/models/") == [
        "dogbreed/models/dog-breed-classifier-mobile/model.tar.gz",
        "dogbreed/models/dog-breed-classifier/model.tar.gz",
    ]
    for target in DEFAULT_TARGETS:
        assert aws_cloud.body(f"dogbreed/models/{target}") == (model_store / target).read_bytes()
    assert "endpoint dogbreed is InService" in out

    # Redeploy: a new model and config, the endpoint updated in place, the replaced ones deleted.
    second = second_deploy(aws_cloud, monkeypatch, first, registered=False)
    aws_cloud.expect("describe_endpoint", {"EndpointName": "dogbreed"}, endpoint("Updating", first))
    aws_cloud.expect("describe_endpoint", {"EndpointName": "dogbreed"}, endpoint("InService", second))
    other = "dogbreed-prod-mme-20261101-000000"  # another endpoint's: never touched
    aws_cloud.expect(
        "list_endpoint_configs",
        {"NameContains": "dogbreed"},
        {
            "EndpointConfigs": [
                {"EndpointConfigName": n, "EndpointConfigArn": f"{ARN}:endpoint-config/{n}", "CreationTime": NOW}
                for n in (first, second, other)
            ]
        },
    )
    aws_cloud.expect("delete_endpoint_config", {"EndpointConfigName": first})
    aws_cloud.expect(
        "list_models",
        {"NameContains": "dogbreed"},
        {
            "Models": [
                {"ModelName": n, "ModelArn": f"{ARN}:model/{n}", "CreationTime": NOW} for n in (other, first, second)
            ]
        },
    )
    aws_cloud.expect("delete_model", {"ModelName": first})
    code, out, err = aws_cloud.run("deploy", *SETTINGS, models[0])
    assert code == 0, err
    aws_cloud.done()
    assert f"updating endpoint dogbreed in place to {second}" in out
    assert f"deleted endpoint config {first}" in out and other not in out


def expect_scaling_applied(aws_cloud, minimum: int, maximum: int, target: float) -> None:
    aws_cloud.scaling.add_response(
        "register_scalable_target", {}, {**VARIANT, "MinCapacity": minimum, "MaxCapacity": maximum}
    )
    aws_cloud.scaling.add_response(
        "put_scaling_policy",
        {"PolicyARN": "arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:x", "Alarms": []},
        {
            "PolicyName": "dogbreed-invocations-per-instance",
            **VARIANT,
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": target,
                "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                "ScaleInCooldown": 300,
                "ScaleOutCooldown": 60,
            },
        },
    )


def test_deploy_scales_the_endpoint_updates_the_policy_in_place_and_teardown_deregisters(
    aws_cloud, model_store, monkeypatch
):
    first = f"dogbreed-mme-{STAMP}"
    model = f"--model={DEFAULT_TARGETS[0]}={model_store / DEFAULT_TARGETS[0]}"
    scale = ["--max-instances", "4", "--min-instances", "1", "--target-invocations", "600"]
    expect_endpoint_created(aws_cloud, first)
    aws_cloud.expect("describe_endpoint", {"EndpointName": "dogbreed"}, endpoint("InService", first))
    expect_scaling_applied(aws_cloud, 1, 4, 600.0)
    code, out, err = aws_cloud.run("deploy", *SETTINGS, model, *scale)
    assert code == 0, err
    aws_cloud.done()
    assert "autoscaling: 1 to 4 instances, target 600 invocations per instance per minute" in out

    # Again, with a new target: deregistered around the update, as SageMaker asks, then the policy put again.
    second = second_deploy(aws_cloud, monkeypatch, first, registered=True)
    aws_cloud.expect("describe_endpoint", {"EndpointName": "dogbreed"}, endpoint("InService", second))
    aws_cloud.expect("list_endpoint_configs", {"NameContains": "dogbreed"}, {"EndpointConfigs": []})
    aws_cloud.expect("list_models", {"NameContains": "dogbreed"}, {"Models": []})
    expect_scaling_applied(aws_cloud, 2, 8, 450.0)
    code, out, err = aws_cloud.run(
        "deploy", *SETTINGS, model, "--max-instances", "8", "--min-instances", "2", "--target-invocations", "450"
    )
    assert code == 0, err
    aws_cloud.done()
    assert "autoscaling: 2 to 8 instances" in out

    aws_cloud.scalable_target(registered=True)
    aws_cloud.scaling.add_response("deregister_scalable_target", {}, VARIANT)
    aws_cloud.expect("describe_endpoint", {"EndpointName": "dogbreed"}, endpoint("InService", second))
    aws_cloud.expect("delete_endpoint", {"EndpointName": "dogbreed"})
    aws_cloud.expect("list_endpoint_configs", {"NameContains": "dogbreed"}, {"EndpointConfigs": []})
    aws_cloud.expect("list_models", {"NameContains": "dogbreed"}, {"Models": []})
    code, out, err = aws_cloud.run("teardown", *SETTINGS)
    assert code == 0, err
    aws_cloud.done()
    assert out.splitlines()[:2] == ["deregistered dogbreed's autoscaling", "deleted endpoint dogbreed"]


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--target-invocations", "100"], "need --max-instances"),
        (["--max-instances", "2", "--min-instances", "3", "--target-invocations", "100"], "<= --max-instances"),
        (["--max-instances", "2"], "--target-invocations"),
    ],
)
def test_deploy_refuses_scaling_bounds_that_cannot_work_before_any_call(aws_cloud, model_store, flags, words):
    model = f"--model={DEFAULT_TARGETS[0]}={model_store / DEFAULT_TARGETS[0]}"
    code, _, err = aws_cloud.run("deploy", *SETTINGS, model, *flags)
    assert code == 1 and words in err and err.count("\n") == 1
    aws_cloud.done()


def test_deploy_endpoint_that_fails_to_reach_in_service_is_a_clear_error(aws_cloud, model_store):
    name = f"dogbreed-mme-{STAMP}"
    expect_endpoint_created(aws_cloud, name)
    aws_cloud.expect(
        "describe_endpoint",
        {"EndpointName": "dogbreed"},
        endpoint(
            "Failed",
            name,
            "The primary container for production variant AllTraffic did not pass the ping health check.",
        ),
    )
    target = DEFAULT_TARGETS[0]
    code, _out, err = aws_cloud.run("deploy", *SETTINGS, "--model", f"{target}={model_store / target}")
    assert code == 1
    assert err.count("\n") == 1 and "endpoint dogbreed failed: " in err
    assert "did not pass the ping health check" in err and "make teardown" in err
    aws_cloud.done()


def test_deploy_replaces_a_failed_endpoint_and_refuses_one_in_flight(aws_cloud, model_store):
    name = f"dogbreed-mme-{STAMP}"
    target = DEFAULT_TARGETS[0]
    model = f"{target}={model_store / target}"
    aws_cloud.expect("describe_endpoint", {"EndpointName": "dogbreed"}, endpoint("Creating", "older"))
    code, _, err = aws_cloud.run("deploy", *SETTINGS, "--model", model)
    assert code == 1 and err == "deploy: error: endpoint dogbreed is Creating; wait for it, or make teardown\n"

    aws_cloud.expect("describe_endpoint", {"EndpointName": "dogbreed"}, endpoint("Failed", "older", "bad image"))
    expect_new_endpoint_resources(aws_cloud, name)
    aws_cloud.expect("delete_endpoint", {"EndpointName": "dogbreed"})
    aws_cloud.expect("describe_endpoint", {"EndpointName": "dogbreed"}, endpoint("Deleting", "older"))
    not_found(aws_cloud, "describe_endpoint", 'endpoint "dogbreed"')  # the deletion waiter's last look
    aws_cloud.expect(
        "create_endpoint",
        {"EndpointName": "dogbreed", "EndpointConfigName": name},
        {"EndpointArn": f"{ARN}:endpoint/dogbreed"},
    )
    aws_cloud.expect("describe_endpoint", {"EndpointName": "dogbreed"}, endpoint("InService", name))
    aws_cloud.expect("list_endpoint_configs", {"NameContains": "dogbreed"}, {"EndpointConfigs": []})
    aws_cloud.expect("list_models", {"NameContains": "dogbreed"}, {"Models": []})
    code, out, err = aws_cloud.run("deploy", *SETTINGS, "--model", model)
    assert code == 0, err
    assert "endpoint dogbreed is Failed; replacing it" in out and "endpoint dogbreed is InService" in out
    aws_cloud.done()


def test_deploy_refuses_bad_targets_and_broken_archives_before_any_call(aws_cloud, tmp_path, model_store):
    broken = tmp_path / "model.tar.gz"
    broken.write_bytes(b"not a tar")
    code, _, err = aws_cloud.run("deploy", *SETTINGS, "--model", f"../escape.tar.gz={broken}")
    assert code == 1 and "must be a relative path ending in .tar.gz" in err
    not_found(aws_cloud, "describe_endpoint", 'endpoint "dogbreed"')
    code, _, err = aws_cloud.run("add-model", *SETTINGS, "--model", f"extra/model.tar.gz={broken}")
    assert code == 1 and f"{broken} is not a readable model.tar.gz" in err
    no_metadata = tmp_path / "weights-only.tar.gz"
    with tarfile.open(no_metadata, "w:gz") as tar:
        tar.add(broken, arcname="model.pth")
    not_found(aws_cloud, "describe_endpoint", 'endpoint "dogbreed"')
    code, _, err = aws_cloud.run("add-model", *SETTINGS, "--model", f"extra/model.tar.gz={no_metadata}")
    assert code == 1 and "is not a model artifact" in err
    pth_only = tmp_path / "pth-only.tar.gz"  # an artifact from before training exported ONNX
    metadata = tmp_path / "metadata.json"
    with tarfile.open(model_store / DEFAULT_TARGETS[0]) as packed:
        served = json.load(packed.extractfile("metadata.json"))
    metadata.write_text(json.dumps({k: v for k, v in served.items() if k != "onnx"}))
    with tarfile.open(pth_only, "w:gz") as tar:
        tar.add(metadata, arcname="metadata.json")
        tar.add(broken, arcname="model.pth")
    not_found(aws_cloud, "describe_endpoint", 'endpoint "dogbreed"')
    code, _, err = aws_cloud.run("add-model", *SETTINGS, "--model", f"extra/model.tar.gz={pth_only}")
    assert code == 1 and "make export-onnx" in err
    assert aws_cloud.keys() == []  # nothing was uploaded
    aws_cloud.done()


def expect_served_model(aws_cloud, data_url: str = f"s3://{BUCKET}/dogbreed/models/") -> None:
    name = f"dogbreed-mme-{STAMP}"
    aws_cloud.expect("describe_endpoint", {"EndpointName": "dogbreed"}, endpoint("InService", name))
    aws_cloud.expect(
        "describe_endpoint_config",
        {"EndpointConfigName": name},
        {
            "EndpointConfigName": name,
            "EndpointConfigArn": f"{ARN}:endpoint-config/{name}",
            "CreationTime": NOW,
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": name}],
        },
    )
    aws_cloud.expect(
        "describe_model",
        {"ModelName": name},
        {
            "ModelName": name,
            "ModelArn": f"{ARN}:model/{name}",
            "CreationTime": NOW,
            "PrimaryContainer": {"Image": SERVE_IMAGE, "Mode": "MultiModel", "ModelDataUrl": data_url},
        },
    )


def test_add_model_uploads_under_the_prefix_the_endpoint_serves(aws_cloud, model_store):
    expect_served_model(aws_cloud, f"s3://{BUCKET}/elsewhere/models/")
    source = model_store / DEFAULT_TARGETS[1]
    code, out, err = aws_cloud.run("add-model", *SETTINGS, "--model", f"dog-breed-classifier-v2/model.tar.gz={source}")
    assert code == 0, err
    aws_cloud.done()
    assert aws_cloud.keys() == ["elsewhere/models/dog-breed-classifier-v2/model.tar.gz"]
    assert aws_cloud.body("elsewhere/models/dog-breed-classifier-v2/model.tar.gz") == source.read_bytes()
    assert "live on dogbreed as TargetModel dog-breed-classifier-v2/model.tar.gz" in out


# --- invoke ---------------------------------------------------------------------------------------------------------


def test_invoke_sends_the_image_to_each_target_model(aws_cloud):
    body = TEST_IMAGE.read_bytes()
    for target, labels in zip(DEFAULT_TARGETS, (["Crimson_disc", "Blue_stripes"], ["Crimson_disc", "x"]), strict=True):
        aws_cloud.runtime.add_response(
            "invoke_endpoint",
            invocation_answer(target, labels),
            {
                "EndpointName": "dogbreed",
                "TargetModel": target,
                "ContentType": "application/x-image",
                "Accept": "application/json",
                "CustomAttributes": "top_k=2",
                "Body": body,
            },
        )
    code, out, err = aws_cloud.run("invoke", "--image", str(TEST_IMAGE), "--top-k", "2")
    assert code == 0, err
    aws_cloud.done()
    assert out.splitlines() == [
        "dog-breed-classifier/model.tar.gz (endpoint dogbreed):",
        "    0.9000  Crimson_disc",
        "    0.4500  Blue_stripes",
        "dog-breed-classifier-mobile/model.tar.gz (endpoint dogbreed):",
        "    0.9000  Crimson_disc",
        "    0.4500  x",
    ]


def test_invoke_model_error_is_a_one_line_error(aws_cloud):
    aws_cloud.runtime.add_client_error(
        "invoke_endpoint",
        service_error_code="ModelError",
        http_status_code=424,
        service_message="Received client error (404) from primary: target model 'nope/model.tar.gz' not found",
    )
    code, _, err = aws_cloud.run("invoke", "--image", str(TEST_IMAGE), "--target", "nope/model.tar.gz")
    assert code == 1 and err.count("\n") == 1 and "ModelError" in err and "not found" in err
    aws_cloud.done()


def test_invoke_reaches_a_local_server_through_the_same_client_path(model_store, tmp_path, capsys):
    with running_server(model_store, tmp_path) as server:
        code = cloud_main(["invoke", "--local-port", str(server.port), "--image", str(TEST_IMAGE), "--top-k", "3"])
        out, err = capsys.readouterr()
        assert code == 0, err
        lines = out.splitlines()
        assert (
            lines[0] == f"dog-breed-classifier/model.tar.gz (the local serving container on 127.0.0.1:{server.port}):"
        )
        assert len(lines) == 8 and lines[4].startswith("dog-breed-classifier-mobile/model.tar.gz")
        known = {display_label(folder.name) for folder in (SAMPLE_DATA / "train").iterdir()}
        labels = {line[12:] for line in lines[1:4]}  # after "  PROBABILITY  "
        assert labels <= known and len(labels) == 3

        code = cloud_main(
            ["invoke", "--local-port", str(server.port), "--image", str(TEST_IMAGE), "--target", "missing/model.tar.gz"]
        )
        _, err = capsys.readouterr()
        assert (
            code == 1
            and err.startswith("invoke: error: the endpoint answered 404: target model")
            and err.count("\n") == 1
        )
        assert server.healthy()


def test_invoke_with_no_local_server_says_so(tmp_path, capsys):
    from tests.conftest import free_port

    port = free_port()
    code = cloud_main(["invoke", "--local-port", str(port), "--image", str(TEST_IMAGE)])
    _, err = capsys.readouterr()
    assert code == 1 and f"cannot reach the local serving container on 127.0.0.1:{port}" in err


# --- batch transform ------------------------------------------------------------------------------------------------


def expect_batch_model(aws_cloud, name: str, model_data: str, workers: int, payload_mb: int) -> None:
    """The transform job's own single-model model, with the serving settings the job is sized from."""
    environment = {"SAGEMAKER_MODEL_SERVER_WORKERS": str(workers), "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(payload_mb)}
    aws_cloud.expect(
        "create_model",
        {
            "ModelName": name,
            "ExecutionRoleArn": ROLE,
            "PrimaryContainer": {
                "Image": SERVE_IMAGE,
                "ModelDataUrl": model_data,
                "Mode": "SingleModel",
                "Environment": environment,
            },
        },
        {"ModelArn": f"{ARN}:model/{name}"},
    )


def test_batch_transform_runs_the_serving_image_over_an_s3_folder(aws_cloud):
    name = f"dogbreed-batch-{STAMP}"
    aws_cloud.aws.s3.put_object(Bucket=BUCKET, Key="dogbreed/models/dog-breed-classifier/model.tar.gz", Body=b"m")
    for i in range(3):
        aws_cloud.aws.s3.put_object(Bucket=BUCKET, Key=f"images/dog{i}.jpg", Body=TEST_IMAGE.read_bytes())
    expect_served_model(aws_cloud)
    model_data = f"s3://{BUCKET}/dogbreed/models/dog-breed-classifier/model.tar.gz"
    expect_batch_model(aws_cloud, name, model_data, workers=1, payload_mb=6)
    output = f"s3://{BUCKET}/dogbreed/batch/{name}/"
    transform = {
        "TransformJobName": name,
        "ModelName": name,
        "BatchStrategy": "SingleRecord",
        "MaxConcurrentTransforms": 2,
        "MaxPayloadInMB": 6,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/images/"}},
            "ContentType": "application/x-image",
        },
        "TransformOutput": {"S3OutputPath": output, "Accept": "application/json"},
        "TransformResources": {"InstanceCount": 1, "InstanceType": "ml.m5.large"},
    }
    aws_cloud.expect("create_transform_job", transform, {"TransformJobArn": f"{ARN}:transform-job/{name}"})
    described = {
        "TransformJobName": name,
        "TransformJobArn": f"{ARN}:transform-job/{name}",
        "ModelName": name,
        "TransformInput": transform["TransformInput"],
        "TransformResources": transform["TransformResources"],
        "CreationTime": NOW,
    }
    aws_cloud.expect(
        "describe_transform_job", {"TransformJobName": name}, {**described, "TransformJobStatus": "InProgress"}
    )
    aws_cloud.expect(
        "describe_transform_job", {"TransformJobName": name}, {**described, "TransformJobStatus": "Completed"}
    )
    aws_cloud.expect("delete_model", {"ModelName": name})
    code, out, err = aws_cloud.run("batch-transform", *SETTINGS, "--input", f"s3://{BUCKET}/images/")
    assert code == 0, err
    aws_cloud.done()
    assert f"predictions: {output}" in out


def test_batch_transform_on_many_instances_is_sized_from_the_serving_settings(aws_cloud):
    name = f"dogbreed-batch-{STAMP}"
    aws_cloud.aws.s3.put_object(Bucket=BUCKET, Key="dogbreed/models/dog-breed-classifier/model.tar.gz", Body=b"m")
    aws_cloud.aws.s3.put_object(Bucket=BUCKET, Key="images/dog.jpg", Body=TEST_IMAGE.read_bytes())
    expect_served_model(aws_cloud)
    model_data = f"s3://{BUCKET}/dogbreed/models/dog-breed-classifier/model.tar.gz"
    expect_batch_model(aws_cloud, name, model_data, workers=3, payload_mb=10)
    aws_cloud.expect(
        "create_transform_job",
        {
            "TransformJobName": name,
            "ModelName": name,
            "BatchStrategy": "SingleRecord",
            "MaxConcurrentTransforms": 4,  # a request per worker, and one in transfer
            "MaxPayloadInMB": 10,
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/images/"}},
                "ContentType": "application/x-image",
            },
            "TransformOutput": {"S3OutputPath": f"s3://{BUCKET}/dogbreed/batch/{name}/", "Accept": "application/json"},
            "TransformResources": {"InstanceCount": 4, "InstanceType": "ml.c5.2xlarge"},
        },
        {"TransformJobArn": f"{ARN}:transform-job/{name}"},
    )
    code, out, err = aws_cloud.run(
        "batch-transform",
        *SETTINGS,
        "--input",
        f"s3://{BUCKET}/images/",
        "--instance-count",
        "4",
        "--instance-type",
        "ml.c5.2xlarge",
        "--workers",
        "3",
        "--max-payload-mb",
        "10",
        "--no-wait",
    )
    assert code == 0, err
    aws_cloud.done()
    assert "on 4 x ml.c5.2xlarge, 4 requests in flight per instance" in out


def test_batch_transform_refuses_sizes_that_cannot_work_before_any_call(aws_cloud):
    code, _, err = aws_cloud.run("batch-transform", *SETTINGS, "--input", f"s3://{BUCKET}/x/", "--instance-count", "0")
    assert code == 1 and err == "batch-transform: error: --instance-count must be between 1 and 100, got 0\n"
    aws_cloud.done()


def test_batch_transform_checks_its_input_and_model_first(aws_cloud):
    code, _, err = aws_cloud.run("batch-transform", *SETTINGS, "--input", f"s3://{BUCKET}/nothing/")
    assert code == 1 and err == f"batch-transform: error: no objects under s3://{BUCKET}/nothing/\n"
    aws_cloud.aws.s3.put_object(Bucket=BUCKET, Key="images/a.jpg", Body=b"x")
    not_found(aws_cloud, "describe_endpoint", 'endpoint "dogbreed"')
    code, _, err = aws_cloud.run("batch-transform", *SETTINGS, "--input", f"s3://{BUCKET}/images/")
    assert code == 1 and "dog-breed-classifier/model.tar.gz does not exist: make deploy uploads the models" in err
    aws_cloud.done()


# --- teardown -------------------------------------------------------------------------------------------------------


def test_teardown_deletes_the_endpoint_its_configs_and_models_and_keeps_s3_unless_asked(aws_cloud):
    for key in ("dogbreed/models/dog-breed-classifier/model.tar.gz", "dogbreed/data/x.jpg"):
        aws_cloud.aws.s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    mme, batch = f"dogbreed-mme-{STAMP}", f"dogbreed-batch-{STAMP}"
    other = "dogbreed-prod-mme-20261101-000000"

    def expect_listings(configs, models):
        aws_cloud.expect(
            "list_endpoint_configs",
            {"NameContains": "dogbreed"},
            {
                "EndpointConfigs": [
                    {"EndpointConfigName": n, "EndpointConfigArn": f"{ARN}:endpoint-config/{n}", "CreationTime": NOW}
                    for n in configs
                ]
            },
        )
        aws_cloud.expect(
            "list_models",
            {"NameContains": "dogbreed"},
            {"Models": [{"ModelName": n, "ModelArn": f"{ARN}:model/{n}", "CreationTime": NOW} for n in models]},
        )

    aws_cloud.expect("describe_endpoint", {"EndpointName": "dogbreed"}, endpoint("InService", mme))
    aws_cloud.expect("delete_endpoint", {"EndpointName": "dogbreed"})
    aws_cloud.sagemaker.add_response(
        "list_endpoint_configs",
        {
            "EndpointConfigs": [
                {"EndpointConfigName": n, "EndpointConfigArn": f"{ARN}:endpoint-config/{n}", "CreationTime": NOW}
                for n in (mme, other)
            ]
        },
        {"NameContains": "dogbreed"},
    )
    aws_cloud.expect("delete_endpoint_config", {"EndpointConfigName": mme})
    models = [{"ModelName": n, "ModelArn": f"{ARN}:model/{n}", "CreationTime": NOW} for n in (mme, batch, other)]
    aws_cloud.expect("list_models", {"NameContains": "dogbreed"}, {"Models": models})  # one listing for both kinds
    aws_cloud.expect("delete_model", {"ModelName": mme})
    aws_cloud.expect("delete_model", {"ModelName": batch})
    aws_cloud.scalable_target(registered=False)
    code, out, err = aws_cloud.run("teardown", *SETTINGS)
    assert code == 0, err
    aws_cloud.done()
    assert out.splitlines() == [
        "deleted endpoint dogbreed",
        f"deleted endpoint config {mme}",
        f"deleted model {mme}",
        f"deleted model {batch}",
        "S3 data kept (--delete-s3 models|all removes it)",
    ]
    assert len(aws_cloud.keys()) == 2

    # Again, with nothing left and the models' S3 data asked for.
    not_found(aws_cloud, "describe_endpoint", 'endpoint "dogbreed"')
    expect_listings([other], [other])
    aws_cloud.scalable_target(registered=False)
    code, out, err = aws_cloud.run("teardown", *SETTINGS, "--delete-s3", "models")
    assert code == 0, err
    aws_cloud.done()
    assert "nothing to delete" in out and f"deleted 1 object(s) under s3://{BUCKET}/dogbreed/models/" in out
    assert aws_cloud.keys() == ["dogbreed/data/x.jpg"]


# --- clarify --------------------------------------------------------------------------------------------------------


def test_clarify_starts_an_explainability_job_on_the_endpoints_target_model(aws_cloud, tmp_path):
    name = f"dogbreed-clarify-{STAMP}"
    for i in range(2):
        aws_cloud.aws.s3.put_object(Bucket=BUCKET, Key=f"images/dog{i}.jpg", Body=TEST_IMAGE.read_bytes())
    output = f"s3://{BUCKET}/dogbreed/clarify/{name}"

    def s3_input(name: str, uri: str, local: str) -> dict:
        return {
            "InputName": name,
            "S3Input": {
                "S3Uri": uri,
                "LocalPath": local,
                "S3DataType": "S3Prefix",
                "S3InputMode": "File",
                "S3DataDistributionType": "FullyReplicated",
                "S3CompressionType": "None",
            },
        }

    aws_cloud.expect(
        "create_processing_job",
        {
            "ProcessingJobName": name,
            "RoleArn": ROLE,
            "AppSpecification": {
                "ImageUri": "205585389593.dkr.ecr.us-east-1.amazonaws.com/sagemaker-clarify-processing:1.0"
            },
            "ProcessingInputs": [
                s3_input("dataset", f"s3://{BUCKET}/images/", "/opt/ml/processing/input/data"),
                s3_input("analysis_config", f"{output}/analysis_config.json", "/opt/ml/processing/input/config"),
            ],
            "ProcessingOutputConfig": {
                "Outputs": [
                    {
                        "OutputName": "analysis_result",
                        "S3Output": {
                            "S3Uri": output,
                            "LocalPath": "/opt/ml/processing/output",
                            "S3UploadMode": "Continuous",
                        },
                    }
                ]
            },
            "ProcessingResources": {
                "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}
            },
        },
        {"ProcessingJobArn": f"{ARN}:processing-job/{name}"},
    )
    labels = tmp_path / "metrics.json"
    labels.write_text(json.dumps({"labels": ["Crimson disc", "Emerald square"]}))
    code, out, err = aws_cloud.run(
        "clarify",
        *SETTINGS,
        "--input",
        f"s3://{BUCKET}/images/",
        "--labels",
        str(labels),
        "--samples",
        "300",
        "--segments",
        "25",
        "--no-wait",
    )
    assert code == 0, err
    aws_cloud.done()
    assert f"clarify job: {name} on ml.m5.xlarge" in out
    assert json.loads(aws_cloud.body(f"dogbreed/clarify/{name}/analysis_config.json")) == {
        "dataset_type": "application/x-image",
        "methods": {
            "shap": {
                "num_samples": 300,
                "seed": 0,
                "use_logit": False,
                "save_local_shap_values": True,
                "image_config": {"model_type": "IMAGE_CLASSIFICATION", "num_segments": 25, "segment_compactness": 10},
            },
            "report": {"name": "report", "title": "Analysis Report"},
        },
        "predictor": {
            "endpoint_name": "dogbreed",
            "target_model": "dog-breed-classifier/model.tar.gz",
            "content_type": "image/jpeg",
            "accept_type": "application/json",
            "custom_attributes": "probabilities=true",
            "probability": "results[0].probabilities",
            "label_headers": ["Crimson disc", "Emerald square"],
        },
    }


def test_clarify_checks_its_input_and_labels_before_any_call(aws_cloud, tmp_path):
    code, _, err = aws_cloud.run("clarify", *SETTINGS, "--input", "images/")
    assert code == 1 and "--input must be an S3 folder" in err
    aws_cloud.aws.s3.put_object(Bucket=BUCKET, Key="images/a.jpg", Body=b"x")
    (tmp_path / "bad.json").write_text("{}")
    code, _, err = aws_cloud.run(
        "clarify", *SETTINGS, "--input", f"s3://{BUCKET}/images/", "--labels", str(tmp_path / "bad.json")
    )
    assert code == 1 and err.count("\n") == 1 and "no list of labels" in err
    aws_cloud.done()
