"""Cloud workflows on Amazon SageMaker with this project's images (``make hpo``, ``train-remote``, ``deploy`` ...).

    python -m dogbreed.workflows.cloud hpo --data s3://BUCKET/dogImages/ --max-jobs 8 --max-parallel-jobs 2
    python -m dogbreed.workflows.cloud best --tuning-job NAME
    python -m dogbreed.workflows.cloud train-remote --data s3://BUCKET/dogImages/ --from-tuning-job NAME [--spot]
    python -m dogbreed.workflows.cloud training-result --training-job NAME
    python -m dogbreed.workflows.cloud deploy --model dog-breed-classifier/model.tar.gz=build/.../model.tar.gz \\
        --model dog-breed-classifier-mobile/model.tar.gz=s3://BUCKET/.../model.tar.gz
    python -m dogbreed.workflows.cloud add-model --model dog-breed-classifier-resnet50/model.tar.gz=PATH
    python -m dogbreed.workflows.cloud invoke --image dog.jpg [--target T ...] [--local-port 8080]
    python -m dogbreed.workflows.cloud batch-transform --input s3://BUCKET/images/
    python -m dogbreed.workflows.cloud teardown [--delete-s3 models|all]

Settings come from flags, else environment variables: ``--role``
(SAGEMAKER_ROLE), ``--region`` (AWS_REGION, AWS_DEFAULT_REGION), ``--bucket``
(SAGEMAKER_BUCKET; default: the SDK's bucket sagemaker-REGION-ACCOUNT),
``--prefix`` (SAGEMAKER_PREFIX), ``--endpoint`` (SAGEMAKER_ENDPOINT), image
URIs (TRAIN_IMAGE_URI, SERVE_IMAGE_URI; default: what ``make push`` pushed to
ECR, REGISTRY/dogbreed-{train,serve}:TAG), instance types
(TRAIN_INSTANCE_TYPE, SERVE_INSTANCE_TYPE, TRANSFORM_INSTANCE_TYPE) and
``--spot`` (SAGEMAKER_SPOT=true).

Everything in S3 lives under ``s3://BUCKET/PREFIX/``: ``data/``, ``tuning/``,
``training/``, ``checkpoints/``, ``models/`` (the endpoint's model data:
``models/dog-breed-classifier/model.tar.gz`` ...) and ``batch/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import urllib3

from dogbreed import settings, workflows
from dogbreed.errors import run_cli
from dogbreed.progress import Progress
from dogbreed.sagemaker_env import TORCH_DISTRIBUTED
from dogbreed.training.metrics import OBJECTIVE_METRIC
from dogbreed.workflows.aws import (Aws, CloudError, aws_errors, check_bucket, connect, error_code, s3_object_exists,
                                   sdk_session, split_s3_uri)

DEFAULT_TARGETS = ["dog-breed-classifier/model.tar.gz", "dog-breed-classifier-mobile/model.tar.gz"]
DEBUGGER_RULES = ["loss_not_decreasing", "overfit", "overtraining", "vanishing_gradient", "poor_weight_initialization"]
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
RESOURCE_STAMP = r"\d{8}-\d{6}"
MAX_RUN_SECONDS = 24 * 3600


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def parse_pairs(items: list[str], what: str) -> dict[str, str]:
    return workflows.parse_pairs(items, what, CloudError)


# --- settings -------------------------------------------------------------------------------------------------


def require_role(args) -> str:
    if not args.role:
        raise CloudError("no IAM role: set --role, ROLE (make) or SAGEMAKER_ROLE to a SageMaker execution role ARN")
    if not ROLE_ARN.match(args.role):
        raise CloudError(f"--role must be an IAM role ARN like arn:aws:iam::123456789012:role/NAME, got {args.role!r}")
    return args.role


def resolve_bucket(aws: Aws, args) -> str:
    with aws_errors():
        if args.bucket:
            check_bucket(aws, args.bucket)
            return args.bucket
        # The SDK's default bucket, sagemaker-REGION-ACCOUNT, created when missing. The account comes from
        # this session's STS client (the SDK's own lookup pins the regional STS endpoint).
        default = f"sagemaker-{aws.region}-{aws.account_id()}"
        return sdk_session(aws.boto_session, aws.sagemaker, aws.runtime, default_bucket=default).default_bucket()


def image_uri(aws: Aws, args, kind: str) -> str:
    explicit = getattr(args, f"{kind}_image")
    if explicit:
        return explicit
    registry = args.registry or f"{aws.account_id()}.dkr.ecr.{aws.region}.amazonaws.com"
    return f"{registry}/{getattr(args, f'{kind}_repository')}:{args.tag}"


def check_target(target: str) -> str:
    from dogbreed.package import is_target_path

    if not is_target_path(target):
        raise CloudError(f"target {target!r} must be a relative path ending in .tar.gz, "
                         "e.g. dog-breed-classifier/model.tar.gz")
    return target


def models_prefix(args, bucket: str) -> tuple[str, str]:
    """(S3 URI, key prefix) of the endpoint's model data."""
    key = f"{args.prefix}/models/"
    return f"s3://{bucket}/{key}", key


# --- S3 -------------------------------------------------------------------------------------------------------


def check_archive(path: Path) -> dict[str, Any]:
    """A model.tar.gz that the serving image can serve; its metadata. Nothing broken gets uploaded."""
    from dogbreed.artifact_format import METADATA_FILE, served_onnx_file, validate_metadata
    from dogbreed.errors import ArtifactError

    if not path.is_file():
        raise CloudError(f"model archive {path} does not exist")
    try:
        with tarfile.open(path, "r:gz") as tar:
            names = {name.removeprefix("./") for name in tar.getnames()}
            if METADATA_FILE not in names:
                raise CloudError(f"{path} is not a model artifact: it must hold {METADATA_FILE} at its root "
                                 f"(make local-train, train-remote or make model-store writes one)")
            metadata = json.load(tar.extractfile(next(m for m in tar.getmembers()
                                                      if m.name.removeprefix("./") == METADATA_FILE)))
    except (tarfile.TarError, OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CloudError(f"{path} is not a readable model.tar.gz: {exc}") from None
    try:
        validate_metadata(metadata, f"{path}:{METADATA_FILE}")
        _, served = served_onnx_file(metadata)
    except ArtifactError as exc:
        raise CloudError(f"{path}: {exc}") from None
    if served not in names:
        raise CloudError(f"{path} does not hold {served}, the ONNX graph its metadata serves")
    return metadata


def put_artifact(aws: Aws, source: str, bucket: str, key: str) -> str:
    """Upload a local model.tar.gz (checked first) or copy an S3 one to s3://bucket/key."""
    destination = f"s3://{bucket}/{key}"
    with aws_errors():
        if source.startswith("s3://"):
            src_bucket, src_key = split_s3_uri(source)
            aws.s3.copy({"Bucket": src_bucket, "Key": src_key}, bucket, key)
        else:
            check_archive(Path(source))
            aws.s3.upload_file(source, bucket, key)
    print(f"uploaded {source} to {destination}", flush=True)
    return destination


def first_object(aws: Aws, uri: str) -> str | None:
    bucket, key = split_s3_uri(uri)
    with aws_errors():
        listed = aws.s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    contents = listed.get("Contents") or []
    return contents[0]["Key"] if contents else None


def sync_folder(aws: Aws, folder: Path, bucket: str, key_prefix: str, threads: int = 16) -> str:
    """Upload the files of ``folder`` missing (or of another size) under s3://bucket/key_prefix/."""
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not files:
        raise CloudError(f"{folder} holds no files")
    with aws_errors():
        existing = {}
        for page in aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix + "/"):
            existing.update({obj["Key"]: obj["Size"] for obj in page.get("Contents", [])})
        todo = [(p, f"{key_prefix}/{p.relative_to(folder).as_posix()}") for p in files]
        todo = [(p, key) for p, key in todo if existing.get(key) != p.stat().st_size]
        with ThreadPoolExecutor(threads) as pool:
            uploads = pool.map(lambda item: aws.s3.upload_file(str(item[0]), bucket, item[1]), todo)
            for _ in Progress(uploads, total=len(todo), desc="upload", log_every=500, unit="file"):
                pass
    print(f"s3://{bucket}/{key_prefix}/: {len(todo)} file(s) uploaded, {len(files) - len(todo)} already there",
          flush=True)
    return f"s3://{bucket}/{key_prefix}/"


def resolve_data(aws: Aws, args, bucket: str) -> str:
    """The ``training`` channel: an S3 prefix as given, or a local dataset folder synced to PREFIX/data/NAME/."""
    if not args.data:
        raise CloudError("no training data: set --data (DATA in make) to s3://BUCKET/PREFIX/ or a local folder "
                         "holding train/ valid/ test/")
    if args.data.startswith("s3://"):
        if first_object(aws, args.data) is None:
            raise CloudError(f"no objects under {args.data}: upload the dataset there, or pass a local folder")
        return args.data if args.data.endswith("/") else args.data + "/"
    folder = Path(args.data)
    if not folder.is_dir():
        raise CloudError(f"data folder {folder} does not exist")
    if not ((folder / "train").is_dir() or (folder / "dogImages" / "train").is_dir()):
        raise CloudError(f"{folder} holds no train/ folder (expected train/ valid/ test/, as in dogImages)")
    return sync_folder(aws, folder, bucket, f"{args.prefix}/data/{folder.resolve().name}")


# --- tuning and training ----------------------------------------------------------------------------------------


# Ranges that worked for the dogImages transfer-learning jobs this project
# grew from: learning rate 0.001 to 0.1 on a log scale, batch size 16 to 256.
RECOMMENDED_RANGES: dict[str, dict] = {
    "learning-rate": {"type": "continuous", "min": 0.001, "max": 0.1, "scaling": "Logarithmic"},
    "batch-size": {"type": "categorical", "values": [16, 32, 64, 128, 256]},
}


def hyperparameter_ranges() -> dict[str, Any]:
    """The SDK's parameter objects for the recommended ranges (continuous or categorical)."""
    from sagemaker.tuner import CategoricalParameter, ContinuousParameter

    ranges: dict[str, Any] = {}
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
                raise CloudError(f"tuning job {tuning_job!r} not found in {aws.region}: "
                                 f"{exc.response['Error'].get('Message')}") from None
            raise
        best = tuning.get("BestTrainingJob")
        if not best:
            raise CloudError(f"tuning job {tuning_job!r} has no completed training job yet "
                             f"(status {tuning['HyperParameterTuningJobStatus']})")
        job = aws.sagemaker.describe_training_job(TrainingJobName=best["TrainingJobName"])
    return best["TrainingJobName"], user_hyperparameters(job["HyperParameters"]), \
        best.get("FinalHyperParameterTuningJobObjectiveMetric", {})


def print_best(aws: Aws, tuning_job: str) -> None:
    name, hyperparameters, objective = best_of(aws, tuning_job)
    print(f"best training job: {name}")
    if objective:
        print(f"objective: {objective.get('MetricName')} = {objective.get('Value')}")
    print(f"hyperparameters: {json.dumps(hyperparameters, sort_keys=True)}")
    print(f"train with them: make train-remote FROM_TUNING_JOB={tuning_job}")


def spot_settings(args, checkpoint_uri: str | None) -> dict[str, Any]:
    settings: dict[str, Any] = {"max_run": args.max_run}
    if args.spot:
        settings.update(use_spot_instances=True, max_wait=args.max_wait or 2 * args.max_run)
        if checkpoint_uri:
            settings["checkpoint_s3_uri"] = checkpoint_uri
    return settings


def wait_and_report(args, wait: Callable[[], Any], report: Callable[[], None], later: str) -> int:
    """Wait for a started job and report on it; with --no-wait, say how to look later."""
    if not args.wait:
        print(f"not waiting; later: {later}")
        return 0
    with aws_errors():
        wait()
    print()
    report()
    return 0


def cmd_hpo(aws: Aws, args) -> int:
    from sagemaker.estimator import Estimator
    from sagemaker.tuner import HyperparameterTuner

    from dogbreed.training.metrics import METRIC_DEFINITIONS

    role = require_role(args)
    bucket = resolve_bucket(aws, args)
    data = resolve_data(aws, args, bucket)
    image = image_uri(aws, args, "train")
    job_name = args.job_name or f"dogbreed-hpo-{stamp()}"[:32]
    estimator = Estimator(
        image_uri=image, role=role, instance_count=1, instance_type=args.instance_type,
        output_path=f"s3://{bucket}/{args.prefix}/tuning",
        # The toolkit runs SAGEMAKER_PROGRAM; the hyperparameter says the same for older toolkits.
        hyperparameters={**parse_pairs(args.hyperparameter, "-H"), "sagemaker_program": "hpo.py"},
        environment={"SAGEMAKER_PROGRAM": "hpo.py"},
        disable_profiler=True, debugger_hook_config=False,  # trials stay lean; train-remote profiles
        sagemaker_session=aws.session, **spot_settings(args, None))
    tuner = HyperparameterTuner(
        estimator, objective_metric_name=args.objective, hyperparameter_ranges=hyperparameter_ranges(),
        metric_definitions=METRIC_DEFINITIONS,
        objective_type="Maximize" if args.objective.endswith("accuracy") else "Minimize",
        max_jobs=args.max_jobs, max_parallel_jobs=args.max_parallel_jobs, early_stopping_type=args.early_stopping)
    with aws_errors():
        tuner.fit({"training": data}, job_name=job_name, wait=False)
    print(f"tuning job: {job_name} ({args.max_jobs} jobs, {args.max_parallel_jobs} at a time, on {image})", flush=True)
    return wait_and_report(args, lambda: aws.session.wait_for_tuning_job(job_name, poll=args.poll),
                           lambda: print_best(aws, job_name), later=f"make best TUNING_JOB={job_name}")


def cmd_best(aws: Aws, args) -> int:
    print_best(aws, args.tuning_job)
    return 0


def debugger_settings(output_path: str, save_interval: int) -> dict[str, Any]:
    """Debugger built-in rules, the tensors they read plus weights, and the Profiler's report."""
    from sagemaker.debugger import CollectionConfig, DebuggerHookConfig, ProfilerConfig, ProfilerRule, Rule, rule_configs

    def collection(name: str, extra: dict[str, str] | None = None) -> CollectionConfig:
        return CollectionConfig(name, parameters={**(extra or {}), "save_interval": str(save_interval)})

    rules = []
    for name in DEBUGGER_RULES:
        base = getattr(rule_configs, name)()
        # Same save interval for the rules' collections and the hook's, so each collection is configured once.
        saved = [collection(c["CollectionName"],
                            {k: v for k, v in c.get("CollectionParameters", {}).items() if k != "save_interval"})
                 for c in base.get("CollectionConfigurations", [])]
        rules.append(Rule.sagemaker(base, collections_to_save=saved or None))
    rules.append(ProfilerRule.sagemaker(rule_configs.ProfilerReport()))
    return {
        "rules": rules,
        "debugger_hook_config": DebuggerHookConfig(
            s3_output_path=output_path,
            collection_configs=[collection("losses"), collection("weights"), collection("gradients")]),
        "profiler_config": ProfilerConfig(s3_output_path=output_path, system_monitor_interval_millis=500),
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
        print(f"profiler report: {job['ProfilerConfig']['S3OutputPath'].rstrip('/')}/{job_name}"
              "/rule-output/ProfilerReport/profiler-output/profiler-report.html")
    for status in job.get("DebugRuleEvaluationStatuses", []) + job.get("ProfilerRuleEvaluationStatuses", []):
        print(f"rule {status['RuleConfigurationName']}: {status['RuleEvaluationStatus']}")
    if job.get("EnableManagedSpotTraining") and job.get("BillableTimeInSeconds"):
        print(f"spot: billed {job['BillableTimeInSeconds']} s of {job.get('TrainingTimeInSeconds')} s")
    if any(s["RuleEvaluationStatus"] == "InProgress" for s in job.get("DebugRuleEvaluationStatuses", [])):
        print(f"rules still evaluating; later: make training-result TRAINING_JOB={job_name}")


def cmd_train_remote(aws: Aws, args) -> int:
    from sagemaker.estimator import Estimator

    from dogbreed.training.metrics import METRIC_DEFINITIONS

    role = require_role(args)
    hyperparameters = parse_pairs(args.hyperparameter, "-H")
    if args.from_tuning_job:
        best_job, tuned, _ = best_of(aws, args.from_tuning_job)
        print(f"hyperparameters of {best_job}, best of {args.from_tuning_job}: {json.dumps(tuned, sort_keys=True)}")
        hyperparameters = {**tuned, **hyperparameters}  # explicit -H wins
    if args.instance_count < 1:
        raise CloudError(f"--instance-count must be at least 1, got {args.instance_count}")
    if args.instance_count > 1 or args.distributed:
        # torchrun across the instances (one process per GPU, or one per instance on CPU); see README.
        hyperparameters[TORCH_DISTRIBUTED] = "true"
    bucket = resolve_bucket(aws, args)
    data = resolve_data(aws, args, bucket)
    image = image_uri(aws, args, "train")
    job_name = args.job_name or f"dogbreed-train-{stamp()}"
    output_path = f"s3://{bucket}/{args.prefix}/training"
    estimator = Estimator(
        image_uri=image, role=role, instance_count=args.instance_count, instance_type=args.instance_type,
        output_path=output_path, hyperparameters=hyperparameters, environment={"SAGEMAKER_PROGRAM": "train_model.py"},
        metric_definitions=METRIC_DEFINITIONS, sagemaker_session=aws.session,
        **(debugger_settings(output_path, args.debug_save_interval) if args.debugger
           else {"debugger_hook_config": False, "disable_profiler": True}),
        # Spot: SageMaker syncs /opt/ml/checkpoints here and restores it after an interruption; the
        # training code resumes from the last epoch it finds there.
        **spot_settings(args, f"s3://{bucket}/{args.prefix}/checkpoints/{job_name}"))
    with aws_errors():
        estimator.fit({"training": data}, job_name=job_name, wait=False, logs=False)
    print(f"training job: {job_name} on {args.instance_type}{' (spot)' if args.spot else ''}, image {image}", flush=True)
    return wait_and_report(args, lambda: aws.session.wait_for_job(job_name, poll=args.poll),
                           lambda: print_training_result(aws, job_name),
                           later=f"make training-result TRAINING_JOB={job_name}")


def cmd_training_result(aws: Aws, args) -> int:
    print_training_result(aws, args.training_job)
    return 0


# --- endpoint -----------------------------------------------------------------------------------------------------


def describe_or_none(call: Callable[[], dict]) -> dict | None:
    import botocore.exceptions

    try:
        return call()
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "ValidationException" and "could not find" in str(exc).lower():
            return None
        raise


def own_names(endpoint: str, kind: str) -> re.Pattern:
    """Names this tool gives the endpoint's models and configs: ENDPOINT-KIND-YYYYmmdd-HHMMSS."""
    return re.compile(rf"^{re.escape(endpoint)}-{kind}-{RESOURCE_STAMP}$")


def cmd_deploy(aws: Aws, args) -> int:
    sources = parse_pairs(args.model, "--model")
    if not sources:
        raise CloudError("no models: give --model TARGET=PATH_OR_S3_URI, e.g. "
                         "--model dog-breed-classifier/model.tar.gz=build/local/resnet18/.../model.tar.gz")
    for target in sources:
        check_target(target)
    role = require_role(args)
    bucket = resolve_bucket(aws, args)
    image = image_uri(aws, args, "serve")
    data_url, key_prefix = models_prefix(args, bucket)
    for target, source in sources.items():
        put_artifact(aws, source, bucket, key_prefix + target)

    name = f"{args.endpoint}-mme-{stamp()}"
    with aws_errors():
        existing = describe_or_none(lambda: aws.sagemaker.describe_endpoint(EndpointName=args.endpoint))
        if existing and existing["EndpointStatus"] not in ("InService", "Failed"):
            raise CloudError(f"endpoint {args.endpoint} is {existing['EndpointStatus']}; wait for it, "
                             "or make teardown")
        aws.session.create_model(name, role, container_defs={
            "Image": image, "Mode": "MultiModel", "ModelDataUrl": data_url})
        aws.session.create_endpoint_config(name, model_name=name, initial_instance_count=args.instance_count,
                                           instance_type=args.instance_type)
        if existing and existing["EndpointStatus"] == "InService":
            print(f"updating endpoint {args.endpoint} in place to {name}", flush=True)
            aws.session.update_endpoint(args.endpoint, name, wait=False)
        else:
            if existing:  # Failed endpoints cannot be updated
                print(f"endpoint {args.endpoint} is Failed; replacing it", flush=True)
                aws.sagemaker.delete_endpoint(EndpointName=args.endpoint)
                aws.sagemaker.get_waiter("endpoint_deleted").wait(
                    EndpointName=args.endpoint, WaiterConfig={"Delay": max(args.poll, 1), "MaxAttempts": 120})
            print(f"creating endpoint {args.endpoint} ({args.instance_type})", flush=True)
            aws.session.create_endpoint(args.endpoint, name, wait=False)
    try:
        with aws_errors():
            aws.session.wait_for_endpoint(args.endpoint, poll=args.poll)
    except CloudError as exc:
        raise CloudError(f"{exc} (make teardown removes it)") from None
    if existing:
        delete_replaced(aws, args.endpoint, keep=name)
    print(f"\nendpoint {args.endpoint} is InService; model data under {data_url}")
    for target in sources:
        print(f"  target model: {target}")
    return 0


def delete_replaced(aws: Aws, endpoint: str, keep: str) -> None:
    """After an in-place update: the endpoint's earlier configs and models, which nothing uses any more."""
    with aws_errors():
        for config in list_own(aws, "endpoint_configs", endpoint):
            if config != keep:
                aws.sagemaker.delete_endpoint_config(EndpointConfigName=config)
                print(f"deleted endpoint config {config}")
        for model in list_own(aws, "models", endpoint):
            if model != keep:
                aws.sagemaker.delete_model(ModelName=model)
                print(f"deleted model {model}")


def list_own(aws: Aws, what: str, endpoint: str, kinds: tuple[str, ...] = ("mme",)) -> list[str]:
    """This tool's models or endpoint configs for ``endpoint``, one listing, grouped by kind in ``kinds`` order."""
    key = {"models": ("list_models", "Models", "ModelName"),
           "endpoint_configs": ("list_endpoint_configs", "EndpointConfigs", "EndpointConfigName")}[what]
    listed = []
    for page in aws.sagemaker.get_paginator(key[0]).paginate(NameContains=endpoint):
        listed += [item[key[2]] for item in page[key[1]]]
    return [name for kind in kinds for name in sorted(filter(own_names(endpoint, kind).match, listed))]


def served_data_url(aws: Aws, endpoint: str) -> str | None:
    """The ModelDataUrl the endpoint serves from; None when there is no such endpoint."""
    with aws_errors():
        described = describe_or_none(lambda: aws.sagemaker.describe_endpoint(EndpointName=endpoint))
        if described is None:
            return None
        config = aws.sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
        model = aws.sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    container = model.get("PrimaryContainer") or model["Containers"][0]
    return container["ModelDataUrl"]


def cmd_add_model(aws: Aws, args) -> int:
    sources = parse_pairs(args.model, "--model")
    if not sources:
        raise CloudError("give --model TARGET=PATH_OR_S3_URI, e.g. --model dog-breed-classifier-v2/model.tar.gz=PATH")
    for target in sources:
        check_target(target)
    data_url = served_data_url(aws, args.endpoint)
    if data_url is None:
        data_url, _ = models_prefix(args, resolve_bucket(aws, args))
        print(f"note: no endpoint {args.endpoint}; uploading under {data_url}, which make deploy serves")
    bucket, key_prefix = split_s3_uri(data_url if data_url.endswith("/") else data_url + "/")
    for target, source in sources.items():
        put_artifact(aws, source, bucket, key_prefix + target)
        print(f"live on {args.endpoint} as TargetModel {target} (loaded on its first request)")
    return 0


def read_answer(response: dict) -> dict:
    body = response["Body"]
    status = getattr(body, "status", 200)  # the local client hands back the HTTP response, error or not
    payload = body.read()
    try:
        answer = json.loads(payload)
    except ValueError:
        raise CloudError(f"the endpoint answered {status} with a body that is not JSON: {payload[:200]!r}") from None
    if status >= 400:
        raise CloudError(f"the endpoint answered {status}: {answer.get('message', answer)}")
    return answer


def cmd_invoke(aws: Aws | None, args) -> int:
    image = Path(args.image)
    if not image.is_file() or image.stat().st_size == 0:
        raise CloudError(f"image {image} does not exist or is empty")
    body = image.read_bytes()
    runtime = aws.runtime if aws else local_runtime(args.local_port)
    where = f"endpoint {args.endpoint}" if aws else f"the local serving container on 127.0.0.1:{args.local_port}"
    for target in args.target or DEFAULT_TARGETS:
        with aws_errors():
            try:
                response = runtime.invoke_endpoint(
                    EndpointName=args.endpoint, TargetModel=target, ContentType="application/x-image",
                    Accept="application/json", CustomAttributes=f"top_k={args.top_k}", Body=body)
            except (OSError, urllib3.exceptions.HTTPError) as exc:  # the local container is not there
                reason = getattr(exc, "reason", exc)
                raise CloudError(f"cannot reach {where}: {reason} (make local-serve starts it)") from None
            answer = read_answer(response)
        print(f"{target} ({where}):")
        for prediction in answer["results"][0]["predictions"]:
            print(f"  {prediction['probability']:8.4f}  {prediction['label']}")
    return 0


def local_runtime(port: int):
    """The SDK's local-mode runtime client: invoke_endpoint against 127.0.0.1:port, as against an endpoint."""
    from sagemaker.local import LocalSagemakerRuntimeClient

    return LocalSagemakerRuntimeClient(config={"local": {"serving_port": port}})


def cmd_batch_transform(aws: Aws, args) -> int:
    from sagemaker.transformer import Transformer

    role = require_role(args)
    if not args.input or not args.input.startswith("s3://"):
        raise CloudError("--input must be an S3 folder of images, e.g. s3://BUCKET/images/")
    if first_object(aws, args.input) is None:
        raise CloudError(f"no objects under {args.input}")
    bucket = resolve_bucket(aws, args)
    image = image_uri(aws, args, "serve")
    model_data = args.model_data
    if not model_data:
        data_url = served_data_url(aws, args.endpoint) or models_prefix(args, bucket)[0]
        model_data = data_url.rstrip("/") + "/" + check_target(args.target)
    if model_data.startswith("s3://"):
        model_bucket, model_key = split_s3_uri(model_data)
        with aws_errors():
            if not s3_object_exists(aws, model_bucket, model_key):
                raise CloudError(f"{model_data} does not exist: make deploy uploads the models, or set --model-data")
    else:
        model_data = put_artifact(aws, model_data, bucket, f"{args.prefix}/batch/models/{Path(model_data).name}")
    name = f"{args.endpoint}-batch-{stamp()}"
    output = args.output or f"s3://{bucket}/{args.prefix}/batch/{name}/"
    with aws_errors():
        # One model per job, in single-model mode: SageMaker unpacks the archive into /opt/ml/model.
        aws.session.create_model(name, role, container_defs={"Image": image, "ModelDataUrl": model_data,
                                                              "Mode": "SingleModel"})
        transformer = Transformer(model_name=name, instance_count=1, instance_type=args.instance_type,
                                  strategy="SingleRecord", output_path=output, accept="application/json",
                                  max_payload=6, max_concurrent_transforms=args.max_concurrent,
                                  sagemaker_session=aws.session)
        transformer.transform(args.input, data_type="S3Prefix", content_type="application/x-image",
                              split_type=None, job_name=name, wait=False, logs=False)
    print(f"transform job: {name} on {args.instance_type}, model {model_data}", flush=True)
    if not args.wait:
        print(f"not waiting; predictions will be under {output} (make teardown removes the job's model)")
        return 0
    try:
        with aws_errors():
            aws.session.wait_for_transform_job(name, poll=args.poll)
    finally:
        with aws_errors():
            aws.sagemaker.delete_model(ModelName=name)
    print(f"\npredictions: {output} (one IMAGE.out JSON per input image)")
    return 0


def cmd_teardown(aws: Aws, args) -> int:
    deleted = 0
    with aws_errors():
        if describe_or_none(lambda: aws.sagemaker.describe_endpoint(EndpointName=args.endpoint)):
            aws.sagemaker.delete_endpoint(EndpointName=args.endpoint)
            print(f"deleted endpoint {args.endpoint}")
            deleted += 1
        for config in list_own(aws, "endpoint_configs", args.endpoint):
            aws.sagemaker.delete_endpoint_config(EndpointConfigName=config)
            print(f"deleted endpoint config {config}")
            deleted += 1
        for model in list_own(aws, "models", args.endpoint, kinds=("mme", "batch")):
            aws.sagemaker.delete_model(ModelName=model)
            print(f"deleted model {model}")
            deleted += 1
    if not deleted:
        print(f"nothing to delete: no endpoint {args.endpoint}, and none of its configs or models")
    if args.delete_s3:
        bucket = resolve_bucket(aws, args)
        prefix = f"{args.prefix}/models/" if args.delete_s3 == "models" else f"{args.prefix}/"
        removed = 0
        with aws_errors():
            for page in aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                if keys:
                    aws.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                    removed += len(keys)
        print(f"deleted {removed} object(s) under s3://{bucket}/{prefix}")
    else:
        print("S3 data kept (--delete-s3 models|all removes it)")
    return 0


# --- CLI ------------------------------------------------------------------------------------------------------------


COMMANDS: dict[str, Callable[[Any, Any], int]] = {
    "hpo": cmd_hpo, "best": cmd_best, "train-remote": cmd_train_remote, "training-result": cmd_training_result,
    "deploy": cmd_deploy, "add-model": cmd_add_model, "invoke": cmd_invoke,
    "batch-transform": cmd_batch_transform, "teardown": cmd_teardown,
}


def get_args_parser() -> argparse.ArgumentParser:
    """The CLI; defaults read the environment when called."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("settings (flag, else environment variable)")
    g.add_argument("--region", default=env("AWS_REGION", env("AWS_DEFAULT_REGION")), help="AWS_REGION")
    g.add_argument("--role", default=env("SAGEMAKER_ROLE"), help="SageMaker execution role ARN (SAGEMAKER_ROLE)")
    g.add_argument("--bucket", default=env("SAGEMAKER_BUCKET"),
                   help="S3 bucket (SAGEMAKER_BUCKET; default: the SDK's sagemaker-REGION-ACCOUNT)")
    g.add_argument("--prefix", default=env("SAGEMAKER_PREFIX", "dogbreed"), help="S3 key prefix (SAGEMAKER_PREFIX)")
    g.add_argument("--endpoint", default=env("SAGEMAKER_ENDPOINT", "dogbreed"),
                   help="endpoint name (SAGEMAKER_ENDPOINT)")
    g.add_argument("--registry", default=env("REGISTRY"),
                   help="registry the images were pushed to (REGISTRY; default: ECR of the account and region)")
    g.add_argument("--tag", default=env("TAG", "latest"), help="image tag (TAG)")
    g.add_argument("--train-repository", default=env("TRAIN_IMAGE", "dogbreed-train"))
    g.add_argument("--serve-repository", default=env("SERVE_IMAGE", "dogbreed-serve"))
    g.add_argument("--train-image", default=env("TRAIN_IMAGE_URI"), help="full training image URI (TRAIN_IMAGE_URI)")
    g.add_argument("--serve-image", default=env("SERVE_IMAGE_URI"), help="full serving image URI (SERVE_IMAGE_URI)")
    g.add_argument("--poll", type=float, default=30, help="seconds between status checks while waiting")
    g.add_argument("--verbose", action="store_true", help="show the SageMaker SDK's log lines too")

    jobs = argparse.ArgumentParser(add_help=False)
    j = jobs.add_argument_group("jobs")
    j.add_argument("--data", default=env("SAGEMAKER_DATA"),
                   help="training channel: s3://BUCKET/PREFIX/ or a local folder (synced to PREFIX/data/NAME/)")
    j.add_argument("--instance-type", default=env("TRAIN_INSTANCE_TYPE", "ml.g4dn.xlarge"),
                   help="TRAIN_INSTANCE_TYPE")
    j.add_argument("-H", "--hyperparameter", action="append", default=[], metavar="NAME=VALUE")
    j.add_argument("--spot", action=argparse.BooleanOptionalAction, default=settings.flag("SAGEMAKER_SPOT"),
                   help="managed spot training (SAGEMAKER_SPOT=true)")
    j.add_argument("--max-run", type=int, default=MAX_RUN_SECONDS, help="seconds per training job")
    j.add_argument("--max-wait", type=int, help="spot: seconds including waits for capacity (default 2 x max-run)")
    j.add_argument("--job-name")

    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                         help="wait for the job and print its result (default)")

    parser = argparse.ArgumentParser(prog="python -m dogbreed.workflows.cloud", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("hpo", parents=[common, jobs, waiting], help="hyperparameter tuning job running hpo.py")
    p.add_argument("--objective", default=OBJECTIVE_METRIC, choices=[OBJECTIVE_METRIC, "validation:loss"])
    p.add_argument("--max-jobs", type=int, default=8)
    p.add_argument("--max-parallel-jobs", type=int, default=2)
    p.add_argument("--early-stopping", default="Auto", choices=["Auto", "Off"])

    p = sub.add_parser("best", parents=[common], help="best training job and hyperparameters of a tuning job")
    p.add_argument("--tuning-job", required=True)

    p = sub.add_parser("train-remote", parents=[common, jobs, waiting],
                       help="training job with Debugger rules and the Profiler report")
    p.add_argument("--from-tuning-job", default=None, help="start from the best hyperparameters of this tuning job")
    p.add_argument("--debug-save-interval", type=int, default=100, help="steps between saved Debugger tensors")
    p.add_argument("--debugger", action=argparse.BooleanOptionalAction, default=True,
                   help="Debugger rules and the Profiler report (--no-debugger: accounts without Debugger)")
    p.add_argument("--instance-count", type=int, default=1,
                   help="instances; above 1, data-parallel training under torchrun across them")
    p.add_argument("--distributed", action=argparse.BooleanOptionalAction, default=False,
                   help="torchrun on one instance too: one process per GPU of a multi-GPU instance")

    p = sub.add_parser("training-result", parents=[common], help="model, Debugger and Profiler output of a job")
    p.add_argument("--training-job", required=True)

    p = sub.add_parser("deploy", parents=[common], help="create or update the multi-model endpoint")
    p.add_argument("--model", action="append", default=[], metavar="TARGET=PATH_OR_S3_URI")
    p.add_argument("--instance-type", default=env("SERVE_INSTANCE_TYPE", "ml.m5.large"), help="SERVE_INSTANCE_TYPE")
    p.add_argument("--instance-count", type=int, default=1)

    p = sub.add_parser("add-model", parents=[common], help="upload another model; live at once, no redeploy")
    p.add_argument("--model", action="append", default=[], metavar="TARGET=PATH_OR_S3_URI")

    p = sub.add_parser("invoke", parents=[common], help="classify an image with each target model")
    p.add_argument("--image", required=True, help="a JPEG or PNG file")
    p.add_argument("--target", action="append", help=f"TargetModel; repeat (default: {', '.join(DEFAULT_TARGETS)})")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--local-port", type=int, help="the local serving container's port instead of the endpoint")

    p = sub.add_parser("batch-transform", parents=[common, waiting], help="batch transform over an S3 folder")
    p.add_argument("--input", required=True, help="s3://BUCKET/PREFIX/ of images")
    p.add_argument("--output", help="default: s3://BUCKET/PREFIX/batch/JOB/")
    p.add_argument("--target", default=DEFAULT_TARGETS[0], help="which of the endpoint's models (default: %(default)s)")
    p.add_argument("--model-data", help="a model.tar.gz (S3 URI or local file) instead of --target")
    p.add_argument("--instance-type", default=env("TRANSFORM_INSTANCE_TYPE", "ml.m5.large"),
                   help="TRANSFORM_INSTANCE_TYPE")
    p.add_argument("--max-concurrent", type=int, default=2, help="requests in flight per instance")

    p = sub.add_parser("teardown", parents=[common], help="delete the endpoint, its configs and models")
    p.add_argument("--delete-s3", choices=["models", "all"],
                   help="also delete S3 data: the endpoint's models, or everything under the prefix")
    return parser


def main(argv: list[str] | None = None, aws: Aws | None = None) -> int:
    """Run one command; ``aws`` replaces the real AWS connection (tests)."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    parser = get_args_parser()
    args = parser.parse_args(argv)
    # This project's progress lines on stdout; other libraries' loggers stay at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    logging.getLogger("dogbreed").setLevel(logging.INFO)
    if not args.verbose:
        # The commands print what matters, and every failure as one line; the SDK's own log lines
        # (job names, troubleshooting links after an error) only repeat it.
        for name in ("sagemaker", "sagemaker.config", "urllib3"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        if args.command == "invoke" and args.local_port:
            return run_cli(args.command, lambda: cmd_invoke(None, args))
        return run_cli(args.command, lambda: COMMANDS[args.command](aws or connect(args.region), args))
    except KeyboardInterrupt:
        print(f"{args.command}: interrupted; jobs already started keep running in SageMaker", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
