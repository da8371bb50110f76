"""``deploy``, ``add-model`` and ``teardown``: the multi-model endpoint, the models under its S3 prefix, and the
SageMaker models and endpoint configs this tool names after it (ENDPOINT-KIND-YYYYmmdd-HHMMSS)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dogbreed.workflows import parse_pairs
from dogbreed.workflows.aws import Aws, CloudError, aws_errors, error_code, split_s3_uri
from dogbreed.workflows.cloud import config, scaling
from dogbreed.workflows.cloud.config import (
    RESOURCE_STAMP,
    Parents,
    check_target,
    env,
    image_uri,
    models_prefix,
    require_role,
    resolve_bucket,
)
from dogbreed.workflows.cloud.jobs import wait_for_end
from dogbreed.workflows.cloud.scaling import VARIANT
from dogbreed.workflows.cloud.storage import put_artifact


@dataclass(frozen=True)
class OwnResource:
    """A kind of SageMaker resource this tool creates per endpoint, and the API calls that list and delete it."""

    label: str
    list_call: str
    listed_key: str
    name_key: str
    delete_call: str


ENDPOINT_CONFIGS = OwnResource(
    "endpoint config", "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName", "delete_endpoint_config"
)
MODELS = OwnResource("model", "list_models", "Models", "ModelName", "delete_model")


def describe_or_none(call: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    import botocore.exceptions

    try:
        return call()
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "ValidationException" and "could not find" in str(exc).lower():
            return None
        raise


def own_names(endpoint: str, kind: str) -> re.Pattern[str]:
    """Names this tool gives the endpoint's models and configs: ENDPOINT-KIND-YYYYmmdd-HHMMSS."""
    return re.compile(rf"^{re.escape(endpoint)}-{kind}-{RESOURCE_STAMP}$")


def list_own(aws: Aws, resource: OwnResource, endpoint: str, kinds: tuple[str, ...]) -> list[str]:
    """This tool's ``resource`` items for ``endpoint``, one listing, grouped by kind in ``kinds`` order."""
    listed = []
    for page in aws.sagemaker.get_paginator(resource.list_call).paginate(NameContains=endpoint):
        listed += [item[resource.name_key] for item in page[resource.listed_key]]
    return [name for kind in kinds for name in sorted(filter(own_names(endpoint, kind).match, listed))]


def delete_own(aws: Aws, endpoint: str, kinds: tuple[str, ...], keep: str | None = None) -> int:
    """This tool's endpoint configs, then models (which the configs name), for ``endpoint``, all but ``keep``;
    the number deleted."""
    deleted = 0
    for resource in (ENDPOINT_CONFIGS, MODELS):
        for name in list_own(aws, resource, endpoint, kinds):
            if name != keep:
                getattr(aws.sagemaker, resource.delete_call)(**{resource.name_key: name})
                print(f"deleted {resource.label} {name}")
                deleted += 1
    return deleted


def model_sources(args: argparse.Namespace, example: str) -> dict[str, str]:
    """The ``--model TARGET=SOURCE`` pairs, every target checked."""
    sources = parse_pairs(args.model, "--model", CloudError)
    if not sources:
        raise CloudError(f"no models: give --model TARGET=PATH_OR_S3_URI, e.g. --model {example}")
    for target in sources:
        check_target(target)
    return sources


def cmd_deploy(aws: Aws, args: argparse.Namespace) -> int:
    sources = model_sources(args, "dog-breed-classifier/model.tar.gz=build/local/resnet18/.../model.tar.gz")
    scale = scaling.requested(args)
    role = require_role(args)
    bucket = resolve_bucket(aws, args)
    image = image_uri(aws, args, "serve")
    data_url, key_prefix = models_prefix(args, bucket)
    for target, source in sources.items():
        put_artifact(aws, source, bucket, key_prefix + target)

    name = f"{args.endpoint}-mme-{config.stamp()}"
    with aws_errors():
        existing = describe_or_none(lambda: aws.sagemaker.describe_endpoint(EndpointName=args.endpoint))
        if existing and existing["EndpointStatus"] not in ("InService", "Failed"):
            raise CloudError(f"endpoint {args.endpoint} is {existing['EndpointStatus']}; wait for it, or make teardown")
        aws.sagemaker.create_model(
            ModelName=name,
            ExecutionRoleArn=role,
            PrimaryContainer={"Image": image, "Mode": "MultiModel", "ModelDataUrl": data_url},
        )
        aws.sagemaker.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": VARIANT,
                    "ModelName": name,
                    "InitialVariantWeight": 1,
                    "InitialInstanceCount": args.instance_count,
                    "InstanceType": args.instance_type,
                }
            ],
        )
        if existing and existing["EndpointStatus"] == "InService":
            # SageMaker asks that a variant under autoscaling is deregistered before an update.
            was_scaled = scaling.deregister(aws, args.endpoint)
            if was_scaled and not scale:
                print("note: autoscaling removed for the update; deploy with --max-instances to keep it")
            print(f"updating endpoint {args.endpoint} in place to {name}", flush=True)
            aws.sagemaker.update_endpoint(EndpointName=args.endpoint, EndpointConfigName=name)
        else:
            if existing:  # Failed endpoints cannot be updated
                print(f"endpoint {args.endpoint} is Failed; replacing it", flush=True)
                aws.sagemaker.delete_endpoint(EndpointName=args.endpoint)
                aws.sagemaker.get_waiter("endpoint_deleted").wait(
                    EndpointName=args.endpoint, WaiterConfig={"Delay": max(args.poll, 1), "MaxAttempts": 120}
                )
            print(f"creating endpoint {args.endpoint} ({args.instance_type})", flush=True)
            aws.sagemaker.create_endpoint(EndpointName=args.endpoint, EndpointConfigName=name)
    try:
        wait_for_end(
            lambda: aws.sagemaker.describe_endpoint(EndpointName=args.endpoint),
            "EndpointStatus",
            f"endpoint {args.endpoint}",
            args.poll,
            ended=("InService",),
        )
    except CloudError as exc:
        raise CloudError(f"{exc} (make teardown removes it)") from None
    if existing:
        # After an in-place update the earlier configs and models serve nothing.
        with aws_errors():
            delete_own(aws, args.endpoint, kinds=("mme",), keep=name)
    if scale:
        scaling.apply(aws, args)
    print(f"\nendpoint {args.endpoint} is InService; model data under {data_url}")
    for target in sources:
        print(f"  target model: {target}")
    return 0


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


def cmd_add_model(aws: Aws, args: argparse.Namespace) -> int:
    sources = model_sources(args, "dog-breed-classifier-v2/model.tar.gz=PATH")
    data_url = served_data_url(aws, args.endpoint)
    if data_url is None:
        data_url, _ = models_prefix(args, resolve_bucket(aws, args))
        print(f"note: no endpoint {args.endpoint}; uploading under {data_url}, which make deploy serves")
    bucket, key_prefix = split_s3_uri(data_url if data_url.endswith("/") else data_url + "/")
    for target, source in sources.items():
        put_artifact(aws, source, bucket, key_prefix + target)
        print(f"live on {args.endpoint} as TargetModel {target} (loaded on its first request)")
    return 0


def delete_s3(aws: Aws, args: argparse.Namespace) -> None:
    """``--delete-s3``: the endpoint's models, or everything under the prefix."""
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


def cmd_teardown(aws: Aws, args: argparse.Namespace) -> int:
    deleted = 0
    if scaling.deregister(aws, args.endpoint):
        print(f"deregistered {args.endpoint}'s autoscaling")
        deleted += 1
    with aws_errors():
        if describe_or_none(lambda: aws.sagemaker.describe_endpoint(EndpointName=args.endpoint)):
            aws.sagemaker.delete_endpoint(EndpointName=args.endpoint)
            print(f"deleted endpoint {args.endpoint}")
            deleted += 1
        deleted += delete_own(aws, args.endpoint, kinds=("mme", "batch"))
    if not deleted:
        print(f"nothing to delete: no endpoint {args.endpoint}, and none of its configs or models")
    if args.delete_s3:
        delete_s3(aws, args)
    else:
        print("S3 data kept (--delete-s3 models|all removes it)")
    return 0


def add_deploy(sub: Any, parents: Parents) -> None:
    p = sub.add_parser("deploy", parents=[parents.common], help="create or update the multi-model endpoint")
    p.add_argument("--model", action="append", default=[], metavar="TARGET=PATH_OR_S3_URI")
    p.add_argument("--instance-type", default=env("SERVE_INSTANCE_TYPE", "ml.m5.large"), help="SERVE_INSTANCE_TYPE")
    p.add_argument("--instance-count", type=int, default=1)
    scaling.add_arguments(p)
    p.set_defaults(run=cmd_deploy)


def add_add_model(sub: Any, parents: Parents) -> None:
    p = sub.add_parser("add-model", parents=[parents.common], help="upload another model; live at once, no redeploy")
    p.add_argument("--model", action="append", default=[], metavar="TARGET=PATH_OR_S3_URI")
    p.set_defaults(run=cmd_add_model)


def add_teardown(sub: Any, parents: Parents) -> None:
    p = sub.add_parser("teardown", parents=[parents.common], help="delete the endpoint, its configs and models")
    p.add_argument(
        "--delete-s3",
        choices=["models", "all"],
        help="also delete S3 data: the endpoint's models, or everything under the prefix",
    )
    p.set_defaults(run=cmd_teardown)
