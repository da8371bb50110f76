"""``hpo`` and ``best``: a hyperparameter tuning job running hpo.py over the recommended ranges, and its best
training job."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dogbreed.training.metrics import OBJECTIVE_METRIC
from dogbreed.workflows import parse_pairs
from dogbreed.workflows.aws import Aws, CloudError, aws_errors, error_code
from dogbreed.workflows.cloud import config
from dogbreed.workflows.cloud.config import Parents, image_uri, require_role, resolve_bucket
from dogbreed.workflows.cloud.jobs import algorithm, s3_channel, spot_settings, wait_and_report, wait_for_end
from dogbreed.workflows.cloud.storage import resolve_data

# Ranges that worked for the dogImages transfer-learning jobs this project
# grew from: learning rate 0.001 to 0.1 on a log scale, batch size 16 to 256.
RECOMMENDED_RANGES: dict[str, dict[str, Any]] = {
    "learning-rate": {"type": "continuous", "min": 0.001, "max": 0.1, "scaling": "Logarithmic"},
    "batch-size": {"type": "categorical", "values": [16, 32, 64, 128, 256]},
}


def parameter_ranges() -> dict[str, list[dict[str, Any]]]:
    """The tuning job's ParameterRanges for the recommended ranges (continuous or categorical)."""
    ranges: dict[str, list[dict[str, Any]]] = {
        "ContinuousParameterRanges": [],
        "CategoricalParameterRanges": [],
        "IntegerParameterRanges": [],
    }
    for name, spec in RECOMMENDED_RANGES.items():
        if spec["type"] == "continuous":
            ranges["ContinuousParameterRanges"].append(
                {
                    "Name": name,
                    "MinValue": str(spec["min"]),
                    "MaxValue": str(spec["max"]),
                    "ScalingType": spec.get("scaling", "Auto"),
                }
            )
        else:
            ranges["CategoricalParameterRanges"].append({"Name": name, "Values": [str(v) for v in spec["values"]]})
    return ranges


def user_hyperparameters(values: dict[str, str]) -> dict[str, str]:
    """A job's hyperparameters without the ones SageMaker and the SDK add."""
    kept = {}
    for name, value in values.items():
        if name.startswith(("sagemaker_", "_")):
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = json.loads(value)
        kept[name] = value
    return kept


def best_of(aws: Aws, tuning_job: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(training job name, its hyperparameters, the tuning job's final objective) of a tuning job's best job."""
    import botocore.exceptions

    with aws_errors():
        try:
            tuning = aws.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning_job)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in ("ResourceNotFound", "ValidationException"):
                raise CloudError(
                    f"tuning job {tuning_job!r} not found in {aws.region}: {exc.response['Error'].get('Message')}"
                ) from None
            raise
        best = tuning.get("BestTrainingJob")
        if not best:
            raise CloudError(
                f"tuning job {tuning_job!r} has no completed training job yet "
                f"(status {tuning['HyperParameterTuningJobStatus']})"
            )
        job = aws.sagemaker.describe_training_job(TrainingJobName=best["TrainingJobName"])
    return (
        best["TrainingJobName"],
        user_hyperparameters(job["HyperParameters"]),
        best.get("FinalHyperParameterTuningJobObjectiveMetric", {}),
    )


def print_best(aws: Aws, tuning_job: str) -> None:
    name, hyperparameters, objective = best_of(aws, tuning_job)
    print(f"best training job: {name}")
    if objective:
        print(f"objective: {objective.get('MetricName')} = {objective.get('Value')}")
    print(f"hyperparameters: {json.dumps(hyperparameters, sort_keys=True)}")
    print(f"train with them: make train-remote FROM_TUNING_JOB={tuning_job}")


def tuning_request(args: argparse.Namespace, job_name: str, role: str, data: str, image: str, output: str) -> dict:
    """CreateHyperParameterTuningJob: hpo.py trials over the recommended ranges, lean (no Debugger, no profiler)."""
    return {
        "HyperParameterTuningJobName": job_name,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "ResourceLimits": {
                "MaxNumberOfTrainingJobs": args.max_jobs,
                "MaxParallelTrainingJobs": args.max_parallel_jobs,
            },
            "TrainingJobEarlyStoppingType": args.early_stopping,
            "HyperParameterTuningJobObjective": {
                "Type": "Maximize" if args.objective.endswith("accuracy") else "Minimize",
                "MetricName": args.objective,
            },
            "ParameterRanges": parameter_ranges(),
        },
        "TrainingJobDefinition": {
            # The toolkit runs SAGEMAKER_PROGRAM; the hyperparameter says the same for older toolkits.
            "StaticHyperParameters": {
                **parse_pairs(args.hyperparameter, "-H", CloudError),
                "sagemaker_program": "hpo.py",
            },
            "RoleArn": role,
            "OutputDataConfig": {"S3OutputPath": output},
            "HyperParameterTuningResourceConfig": {
                "InstanceCount": 1,
                "InstanceType": args.instance_type,
                "VolumeSizeInGB": 30,
            },
            "AlgorithmSpecification": algorithm(image),
            "InputDataConfig": [s3_channel("training", data)],
            "Environment": {"SAGEMAKER_PROGRAM": "hpo.py"},
            **spot_settings(args, None),
        },
    }


def cmd_hpo(aws: Aws, args: argparse.Namespace) -> int:
    role = require_role(args)
    bucket = resolve_bucket(aws, args)
    data = resolve_data(aws, args, bucket)
    image = image_uri(aws, args, "train")
    job_name = args.job_name or f"dogbreed-hpo-{config.stamp()}"[:32]
    request = tuning_request(args, job_name, role, data, image, f"s3://{bucket}/{args.prefix}/tuning")
    with aws_errors():
        aws.sagemaker.create_hyper_parameter_tuning_job(**request)
    print(f"tuning job: {job_name} ({args.max_jobs} jobs, {args.max_parallel_jobs} at a time, on {image})", flush=True)
    return wait_and_report(
        args,
        lambda: wait_for_end(
            lambda: aws.sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=job_name),
            "HyperParameterTuningJobStatus",
            f"tuning job {job_name}",
            args.poll,
        ),
        lambda: print_best(aws, job_name),
        later=f"make best TUNING_JOB={job_name}",
    )


def cmd_best(aws: Aws, args: argparse.Namespace) -> int:
    print_best(aws, args.tuning_job)
    return 0


def add_hpo(sub: Any, parents: Parents) -> None:
    p = sub.add_parser(
        "hpo", parents=[parents.common, parents.jobs, parents.waiting], help="hyperparameter tuning job running hpo.py"
    )
    p.add_argument("--objective", default=OBJECTIVE_METRIC, choices=[OBJECTIVE_METRIC, "validation:loss"])
    p.add_argument("--max-jobs", type=int, default=8)
    p.add_argument("--max-parallel-jobs", type=int, default=2)
    p.add_argument("--early-stopping", default="Auto", choices=["Auto", "Off"])
    p.set_defaults(run=cmd_hpo)


def add_best(sub: Any, parents: Parents) -> None:
    p = sub.add_parser("best", parents=[parents.common], help="best training job and hyperparameters of a tuning job")
    p.add_argument("--tuning-job", required=True)
    p.set_defaults(run=cmd_best)
