"""``invoke`` and ``batch-transform``: predictions from the endpoint (or the local serving container, through the
SDK's local-mode runtime client) and from a batch transform job over an S3 folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import urllib3

from dogbreed.workflows import sdk
from dogbreed.workflows.aws import Aws, CloudError, aws_errors, s3_object_exists, split_s3_uri
from dogbreed.workflows.cloud import config
from dogbreed.workflows.cloud.config import (
    DEFAULT_TARGETS,
    Parents,
    check_target,
    env,
    image_uri,
    models_prefix,
    require_role,
    resolve_bucket,
)
from dogbreed.workflows.cloud.endpoint import served_data_url
from dogbreed.workflows.cloud.jobs import wait_for_end
from dogbreed.workflows.cloud.storage import put_artifact, require_image_folder


def read_answer(response: dict[str, Any]) -> dict[str, Any]:
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


def invoke(runtime: Any, where: str, **request: Any) -> dict[str, Any]:
    """``invoke_endpoint`` with ``request``, and its JSON answer; every failure, a local server that is not there
    included, a one-line :class:`CloudError` naming ``where``."""
    with aws_errors():
        try:
            response = runtime.invoke_endpoint(**request)
        except (OSError, urllib3.exceptions.HTTPError) as exc:  # the local container is not there
            reason = getattr(exc, "reason", exc)
            raise CloudError(f"cannot reach {where}: {reason} (make local-serve starts it)") from None
        return read_answer(response)


def cmd_invoke(aws: Aws | None, args: argparse.Namespace) -> int:
    """Classify ``--image`` with each target model; ``aws`` None: the local container on ``--local-port``."""
    image = Path(args.image)
    if not image.is_file() or image.stat().st_size == 0:
        raise CloudError(f"image {image} does not exist or is empty")
    body = image.read_bytes()
    runtime = aws.runtime if aws else sdk.local_runtime(args.local_port)
    where = f"endpoint {args.endpoint}" if aws else f"the local serving container on 127.0.0.1:{args.local_port}"
    for target in args.target or DEFAULT_TARGETS:
        answer = invoke(
            runtime,
            where,
            EndpointName=args.endpoint,
            TargetModel=target,
            ContentType="application/x-image",
            Accept="application/json",
            CustomAttributes=f"top_k={args.top_k}",
            Body=body,
        )
        print(f"{target} ({where}):")
        for prediction in answer["results"][0]["predictions"]:
            print(f"  {prediction['probability']:8.4f}  {prediction['label']}")
    return 0


def batch_model_data(aws: Aws, args: argparse.Namespace, bucket: str) -> str:
    """The S3 URI of the model the job runs: ``--model-data`` (uploaded when local), else ``--target`` of the
    endpoint's models."""
    model_data = args.model_data or ""
    if not model_data:
        data_url = served_data_url(aws, args.endpoint) or models_prefix(args, bucket)[0]
        model_data = data_url.rstrip("/") + "/" + check_target(args.target)
    if not model_data.startswith("s3://"):
        return put_artifact(aws, model_data, bucket, f"{args.prefix}/batch/models/{Path(model_data).name}")
    model_bucket, model_key = split_s3_uri(model_data)
    with aws_errors():
        if not s3_object_exists(aws, model_bucket, model_key):
            raise CloudError(f"{model_data} does not exist: make deploy uploads the models, or set --model-data")
    return model_data


def concurrent_transforms(args: argparse.Namespace) -> int:
    """Requests in flight per instance: one per serving worker, plus one in transfer while they work."""
    return args.max_concurrent or args.workers + 1


def check_transform_sizes(args: argparse.Namespace) -> None:
    for flag, value, low, high in (
        ("--instance-count", args.instance_count, 1, 100),
        ("--workers", args.workers, 1, 64),
        ("--max-payload-mb", args.max_payload_mb, 1, 100),
    ):
        if not low <= value <= high:
            raise CloudError(f"{flag} must be between {low} and {high}, got {value}")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise CloudError(f"--max-concurrent must be at least 1, got {args.max_concurrent}")


def transform_requests(args: argparse.Namespace, name: str, role: str, image: str, model_data: str, output: str):
    """CreateModel and CreateTransformJob for one model in single-model mode, sized from the serving settings."""
    model = {
        "ModelName": name,
        "ExecutionRoleArn": role,
        # SageMaker unpacks the archive into /opt/ml/model; the container runs with the limits the job is sized from.
        "PrimaryContainer": {
            "Image": image,
            "ModelDataUrl": model_data,
            "Mode": "SingleModel",
            "Environment": {
                "SAGEMAKER_MODEL_SERVER_WORKERS": str(args.workers),
                "SAGEMAKER_MAX_PAYLOAD_IN_MB": str(args.max_payload_mb),
            },
        },
    }
    transform = {
        "TransformJobName": name,
        "ModelName": name,
        "BatchStrategy": "SingleRecord",  # one image per request
        "MaxConcurrentTransforms": concurrent_transforms(args),
        "MaxPayloadInMB": args.max_payload_mb,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": args.input}},
            "ContentType": "application/x-image",
        },
        "TransformOutput": {"S3OutputPath": output, "Accept": "application/json"},
        "TransformResources": {"InstanceCount": args.instance_count, "InstanceType": args.instance_type},
    }
    return model, transform


def cmd_batch_transform(aws: Aws, args: argparse.Namespace) -> int:
    check_transform_sizes(args)
    role = require_role(args)
    require_image_folder(aws, args.input)
    bucket = resolve_bucket(aws, args)
    image = image_uri(aws, args, "serve")
    model_data = batch_model_data(aws, args, bucket)
    name = f"{args.endpoint}-batch-{config.stamp()}"
    output = args.output or f"s3://{bucket}/{args.prefix}/batch/{name}/"
    model, transform = transform_requests(args, name, role, image, model_data, output)
    with aws_errors():
        aws.sagemaker.create_model(**model)
        aws.sagemaker.create_transform_job(**transform)
    print(
        f"transform job: {name} on {args.instance_count} x {args.instance_type}, "
        f"{concurrent_transforms(args)} requests in flight per instance, model {model_data}",
        flush=True,
    )
    if not args.wait:
        print(f"not waiting; predictions will be under {output} (make teardown removes the job's model)")
        return 0
    try:
        wait_for_end(
            lambda: aws.sagemaker.describe_transform_job(TransformJobName=name),
            "TransformJobStatus",
            f"transform job {name}",
            args.poll,
        )
    finally:
        with aws_errors():
            aws.sagemaker.delete_model(ModelName=name)
    print(f"\npredictions: {output} (one IMAGE.out JSON per input image)")
    return 0


def add_invoke(sub: Any, parents: Parents) -> None:
    p = sub.add_parser("invoke", parents=[parents.common], help="classify an image with each target model")
    p.add_argument("--image", required=True, help="a JPEG or PNG file")
    p.add_argument("--target", action="append", help=f"TargetModel; repeat (default: {', '.join(DEFAULT_TARGETS)})")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--local-port", type=int, help="the local serving container's port instead of the endpoint")
    p.set_defaults(run=cmd_invoke)


def add_batch_transform(sub: Any, parents: Parents) -> None:
    p = sub.add_parser(
        "batch-transform", parents=[parents.common, parents.waiting], help="batch transform over an S3 folder"
    )
    p.add_argument("--input", required=True, help="s3://BUCKET/PREFIX/ of images")
    p.add_argument("--output", help="default: s3://BUCKET/PREFIX/batch/JOB/")
    p.add_argument("--target", default=DEFAULT_TARGETS[0], help="which of the endpoint's models (default: %(default)s)")
    p.add_argument("--model-data", help="a model.tar.gz (S3 URI or local file) instead of --target")
    p.add_argument(
        "--instance-type", default=env("TRANSFORM_INSTANCE_TYPE", "ml.m5.large"), help="TRANSFORM_INSTANCE_TYPE"
    )
    p.add_argument("--instance-count", type=int, default=env("TRANSFORM_INSTANCES", "1"), help="TRANSFORM_INSTANCES")
    p.add_argument(
        "--workers", type=int, default=1, help="serving workers per instance (SAGEMAKER_MODEL_SERVER_WORKERS)"
    )
    p.add_argument("--max-concurrent", type=int, help="requests in flight per instance (default: the workers plus one)")
    p.add_argument(
        "--max-payload-mb",
        type=int,
        default=6,
        help="largest image, MB: the job's MaxPayloadInMB and the server's limit",
    )
    p.set_defaults(run=cmd_batch_transform)
