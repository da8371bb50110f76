"""``train-remote`` and ``training-result``: a training job with Debugger rules and the Profiler report, and
what it left behind."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dogbreed.sagemaker_env import TORCH_DISTRIBUTED
from dogbreed.workflows import parse_pairs
from dogbreed.workflows.aws import Aws, CloudError, aws_errors
from dogbreed.workflows.cloud import config
from dogbreed.workflows.cloud.config import Parents, image_uri, require_role, resolve_bucket
from dogbreed.workflows.cloud.jobs import algorithm, s3_channel, spot_settings, wait_and_report, wait_for_end
from dogbreed.workflows.cloud.storage import resolve_data
from dogbreed.workflows.cloud.tuning import best_of

DEBUGGER_RULES = ["loss_not_decreasing", "overfit", "overtraining", "vanishing_gradient", "poor_weight_initialization"]


def debugger_settings(region: str, output_path: str, save_interval: int) -> dict[str, Any]:
    """CreateTrainingJob's Debugger fields: built-in rules, the tensors they read plus weights, and the Profiler's
    report. The rules' parameters and their evaluator image (per region) come from the SDK's Debugger module."""
    from sagemaker.core.debugger import ProfilerRule, Rule, get_rule_container_image_uri, rule_configs

    image = get_rule_container_image_uri("DebuggerRule", region)
    hook_collections: dict[str, dict[str, str]] = {name: {} for name in ("losses", "weights", "gradients")}
    rules = []
    for name in DEBUGGER_RULES:
        base = getattr(rule_configs, name)()
        rule = Rule.sagemaker(base)
        rule.image_uri = image
        rules.append(rule.to_debugger_rule_config_dict())
        # The hook saves what each rule reads; the same save interval for every collection.
        for collection in base.get("CollectionConfigurations", []):
            extra = {k: v for k, v in collection.get("CollectionParameters", {}).items() if k != "save_interval"}
            hook_collections.setdefault(collection["CollectionName"], extra)
    profiler_rule = ProfilerRule.sagemaker(rule_configs.ProfilerReport())
    profiler_rule.image_uri = image
    return {
        "DebugRuleConfigurations": rules,
        "DebugHookConfig": {
            "S3OutputPath": output_path,
            "CollectionConfigurations": [
                {"CollectionName": name, "CollectionParameters": {**extra, "save_interval": str(save_interval)}}
                for name, extra in hook_collections.items()
            ],
        },
        "ProfilerRuleConfigurations": [profiler_rule.to_profiler_rule_config_dict()],
        "ProfilerConfig": {
            "S3OutputPath": output_path,
            "DisableProfiler": False,
            "ProfilingIntervalInMilliseconds": 500,
        },
    }


def print_training_result(aws: Aws, job_name: str) -> None:
    with aws_errors():
        job = aws.sagemaker.describe_training_job(TrainingJobName=job_name)
    print(f"training job: {job_name} ({job['TrainingJobStatus']})")
    if job.get("FailureReason"):
        print(f"failure: {job['FailureReason']}")
    if job.get("ModelArtifacts", {}).get("S3ModelArtifacts"):
        print(f"model: {job['ModelArtifacts']['S3ModelArtifacts']}")
    if job.get("DebugHookConfig", {}).get("S3OutputPath"):
        print(f"debugger tensors: {job['DebugHookConfig']['S3OutputPath'].rstrip('/')}/{job_name}/debug-output/")
    if job.get("ProfilerConfig", {}).get("S3OutputPath"):
        print(
            f"profiler report: {job['ProfilerConfig']['S3OutputPath'].rstrip('/')}/{job_name}"
            "/rule-output/ProfilerReport/profiler-output/profiler-report.html"
        )
    for status in job.get("DebugRuleEvaluationStatuses", []) + job.get("ProfilerRuleEvaluationStatuses", []):
        print(f"rule {status['RuleConfigurationName']}: {status['RuleEvaluationStatus']}")
    if job.get("EnableManagedSpotTraining") and job.get("BillableTimeInSeconds"):
        print(f"spot: billed {job['BillableTimeInSeconds']} s of {job.get('TrainingTimeInSeconds')} s")
    if any(s["RuleEvaluationStatus"] == "InProgress" for s in job.get("DebugRuleEvaluationStatuses", [])):
        print(f"rules still evaluating; later: make training-result TRAINING_JOB={job_name}")


def job_hyperparameters(aws: Aws, args: argparse.Namespace) -> dict[str, Any]:
    """``-H`` pairs over the best of ``--from-tuning-job``, plus the distribution setting."""
    hyperparameters: dict[str, Any] = parse_pairs(args.hyperparameter, "-H", CloudError)
    if args.from_tuning_job:
        best_job, tuned, _ = best_of(aws, args.from_tuning_job)
        print(f"hyperparameters of {best_job}, best of {args.from_tuning_job}: {json.dumps(tuned, sort_keys=True)}")
        hyperparameters = {**tuned, **hyperparameters}  # explicit -H wins
    if args.instance_count < 1:
        raise CloudError(f"--instance-count must be at least 1, got {args.instance_count}")
    if args.instance_count > 1 or args.distributed:
        # torchrun across the instances (one process per GPU, or one per instance on CPU); see docs/training.md.
        hyperparameters[TORCH_DISTRIBUTED] = "true"
    return hyperparameters


def cmd_train_remote(aws: Aws, args: argparse.Namespace) -> int:
    role = require_role(args)
    hyperparameters = job_hyperparameters(aws, args)
    bucket = resolve_bucket(aws, args)
    data = resolve_data(aws, args, bucket)
    image = image_uri(aws, args, "train")
    job_name = args.job_name or f"dogbreed-train-{config.stamp()}"
    output_path = f"s3://{bucket}/{args.prefix}/training"
    request = {
        "TrainingJobName": job_name,
        "AlgorithmSpecification": algorithm(image),
        "RoleArn": role,
        "InputDataConfig": [s3_channel("training", data)],
        "OutputDataConfig": {"S3OutputPath": output_path},
        "ResourceConfig": {
            "InstanceCount": args.instance_count,
            "InstanceType": args.instance_type,
            "VolumeSizeInGB": 30,
        },
        "HyperParameters": {name: str(value) for name, value in hyperparameters.items()},
        "Environment": {"SAGEMAKER_PROGRAM": "train_model.py"},
        # Spot: SageMaker syncs /opt/ml/checkpoints here and restores it after an interruption; the
        # training code resumes from the last epoch it finds there.
        **spot_settings(args, f"s3://{bucket}/{args.prefix}/checkpoints/{job_name}"),
        **(
            debugger_settings(aws.region, output_path, args.debug_save_interval)
            if args.debugger
            else {"ProfilerConfig": {"DisableProfiler": True}}
        ),
    }
    with aws_errors():
        aws.sagemaker.create_training_job(**request)
    print(
        f"training job: {job_name} on {args.instance_type}{' (spot)' if args.spot else ''}, image {image}", flush=True
    )
    return wait_and_report(
        args,
        lambda: wait_for_end(
            lambda: aws.sagemaker.describe_training_job(TrainingJobName=job_name),
            "TrainingJobStatus",
            f"training job {job_name}",
            args.poll,
        ),
        lambda: print_training_result(aws, job_name),
        later=f"make training-result TRAINING_JOB={job_name}",
    )


def cmd_training_result(aws: Aws, args: argparse.Namespace) -> int:
    print_training_result(aws, args.training_job)
    return 0


def add_train_remote(sub: Any, parents: Parents) -> None:
    p = sub.add_parser(
        "train-remote",
        parents=[parents.common, parents.jobs, parents.waiting],
        help="training job with Debugger rules and the Profiler report",
    )
    p.add_argument("--from-tuning-job", default=None, help="start from the best hyperparameters of this tuning job")
    p.add_argument("--debug-save-interval", type=int, default=100, help="steps between saved Debugger tensors")
    p.add_argument(
        "--debugger",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Debugger rules and the Profiler report (--no-debugger: accounts without Debugger)",
    )
    p.add_argument(
        "--instance-count",
        type=int,
        default=1,
        help="instances; above 1, data-parallel training under torchrun across them",
    )
    p.add_argument(
        "--distributed",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="torchrun on one instance too: one process per GPU of a multi-GPU instance",
    )
    p.set_defaults(run=cmd_train_remote)


def add_training_result(sub: Any, parents: Parents) -> None:
    p = sub.add_parser("training-result", parents=[parents.common], help="model, Debugger and Profiler output of a job")
    p.add_argument("--training-job", required=True)
    p.set_defaults(run=cmd_training_result)
