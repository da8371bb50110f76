"""``hpo`` and ``best``: a hyperparameter tuning job running hpo.py over the recommended ranges, and its best
training job."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from dogbreed.training.metrics import OBJECTIVE_METRIC
from dogbreed.workflows import parse_pairs
from dogbreed.workflows.aws import Aws, CloudError, aws_errors, error_code
from dogbreed.workflows.cloud import config
from dogbreed.workflows.cloud.config import Parents, image_uri, require_role, resolve_bucket
from dogbreed.workflows.cloud.jobs import spot_settings, wait_and_report
from dogbreed.workflows.cloud.storage import resolve_data

if TYPE_CHECKING:
    from sagemaker.parameter import ParameterRange
    from sagemaker.workflow.entities import PipelineVariable

# Ranges that worked for the dogImages transfer-learning jobs this project
# grew from: learning rate 0.001 to 0.1 on a log scale, batch size 16 to 256.
RECOMMENDED_RANGES: dict[str, dict[str, Any]] = {
    "learning-rate": {"type": "continuous", "min": 0.001, "max": 0.1, "scaling": "Logarithmic"},
    "batch-size": {"type": "categorical", "values": [16, 32, 64, 128, 256]},
}


def hyperparameter_ranges() -> dict[str | PipelineVariable, ParameterRange]:
    """The SDK's parameter objects for the recommended ranges (continuous or categorical)."""
    from sagemaker.tuner import CategoricalParameter, ContinuousParameter

    ranges: dict[str | PipelineVariable, ParameterRange] = {}
    for name, spec in RECOMMENDED_RANGES.items():
        if spec["type"] == "continuous":
            ranges[name] = ContinuousParameter(spec["min"], spec["max"], scaling_type=spec.get("scaling", "Auto"))
        else:
            ranges[name] = CategoricalParameter(spec["values"])
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


def cmd_hpo(aws: Aws, args: argparse.Namespace) -> int:
    from sagemaker.estimator import Estimator
    from sagemaker.tuner import HyperparameterTuner

    from dogbreed.training.metrics import METRIC_DEFINITIONS

    role = require_role(args)
    bucket = resolve_bucket(aws, args)
    data = resolve_data(aws, args, bucket)
    image = image_uri(aws, args, "train")
    job_name = args.job_name or f"dogbreed-hpo-{config.stamp()}"[:32]
    estimator = Estimator(
        image_uri=image,
        role=role,
        instance_count=1,
        instance_type=args.instance_type,
        output_path=f"s3://{bucket}/{args.prefix}/tuning",
        # The toolkit runs SAGEMAKER_PROGRAM; the hyperparameter says the same for older toolkits.
        hyperparameters={**parse_pairs(args.hyperparameter, "-H", CloudError), "sagemaker_program": "hpo.py"},
        environment={"SAGEMAKER_PROGRAM": "hpo.py"},
        disable_profiler=True,
        debugger_hook_config=False,  # trials stay lean; train-remote profiles
        sagemaker_session=aws.session,
        **spot_settings(args, None),
    )
    tuner = HyperparameterTuner(
        estimator,
        objective_metric_name=args.objective,
        hyperparameter_ranges=hyperparameter_ranges(),
        metric_definitions=METRIC_DEFINITIONS,
        objective_type="Maximize" if args.objective.endswith("accuracy") else "Minimize",
        max_jobs=args.max_jobs,
        max_parallel_jobs=args.max_parallel_jobs,
        early_stopping_type=args.early_stopping,
    )
    with aws_errors():
        tuner.fit({"training": data}, job_name=job_name, wait=False)
    print(f"tuning job: {job_name} ({args.max_jobs} jobs, {args.max_parallel_jobs} at a time, on {image})", flush=True)
    return wait_and_report(
        args,
        lambda: aws.session.wait_for_tuning_job(job_name, poll=args.poll),
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
