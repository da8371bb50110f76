"""Settings of the cloud commands: the flags every command shares, their environment fallbacks, the names
this tool gives what it creates, and where things live in S3."""

from __future__ import annotations

import argparse
import re
import time
from typing import NamedTuple

from dogbreed import settings
from dogbreed.workflows import sdk
from dogbreed.workflows.aws import Aws, CloudError, aws_errors, check_bucket

DEFAULT_TARGETS = ["dog-breed-classifier/model.tar.gz", "dog-breed-classifier-mobile/model.tar.gz"]
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
RESOURCE_STAMP = r"\d{8}-\d{6}"
MAX_RUN_SECONDS = 24 * 3600


def env(name: str, default: str | None = None) -> str | None:
    return settings.text(name, default)


def stamp() -> str:
    """The UTC time in resource names: YYYYmmdd-HHMMSS (RESOURCE_STAMP). The commands call it as
    ``config.stamp()``, so that tests can pin the names."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def require_role(args: argparse.Namespace) -> str:
    if not args.role:
        raise CloudError("no IAM role: set --role, ROLE (make) or SAGEMAKER_ROLE to a SageMaker execution role ARN")
    if not ROLE_ARN.match(args.role):
        raise CloudError(f"--role must be an IAM role ARN like arn:aws:iam::123456789012:role/NAME, got {args.role!r}")
    return args.role


def resolve_bucket(aws: Aws, args: argparse.Namespace) -> str:
    with aws_errors():
        if args.bucket:
            check_bucket(aws, args.bucket)
            return args.bucket
        # The SDK's default bucket, sagemaker-REGION-ACCOUNT, created when missing. The account comes from
        # this session's STS client (the SDK's own lookup pins the regional STS endpoint).
        default = f"sagemaker-{aws.region}-{aws.account_id()}"
        return sdk.session(aws.boto_session, aws.sagemaker, aws.runtime, default_bucket=default).default_bucket()


def image_uri(aws: Aws, args: argparse.Namespace, kind: str) -> str:
    explicit = getattr(args, f"{kind}_image")
    if explicit:
        return explicit
    registry = args.registry or f"{aws.account_id()}.dkr.ecr.{aws.region}.amazonaws.com"
    return f"{registry}/{getattr(args, f'{kind}_repository')}:{args.tag}"


def check_target(target: str) -> str:
    from dogbreed.package import is_target_path

    if not is_target_path(target):
        raise CloudError(
            f"target {target!r} must be a relative path ending in .tar.gz, e.g. dog-breed-classifier/model.tar.gz"
        )
    return target


def models_prefix(args: argparse.Namespace, bucket: str) -> tuple[str, str]:
    """(S3 URI, key prefix) of the endpoint's model data."""
    key = f"{args.prefix}/models/"
    return f"s3://{bucket}/{key}", key


class Parents(NamedTuple):
    """Flag groups that subcommands share, as argparse parent parsers."""

    common: argparse.ArgumentParser  # every command: where, and as whom
    jobs: argparse.ArgumentParser  # commands that start training jobs
    waiting: argparse.ArgumentParser  # commands that can wait for what they started


def parent_parsers() -> Parents:
    """The shared flags; their defaults read the environment now, when the parser is built."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("settings (flag, else environment variable)")
    g.add_argument("--region", default=env("AWS_REGION", env("AWS_DEFAULT_REGION")), help="AWS_REGION")
    g.add_argument("--role", default=env("SAGEMAKER_ROLE"), help="SageMaker execution role ARN (SAGEMAKER_ROLE)")
    g.add_argument(
        "--bucket",
        default=env("SAGEMAKER_BUCKET"),
        help="S3 bucket (SAGEMAKER_BUCKET; default: the SDK's sagemaker-REGION-ACCOUNT)",
    )
    g.add_argument("--prefix", default=env("SAGEMAKER_PREFIX", "dogbreed"), help="S3 key prefix (SAGEMAKER_PREFIX)")
    g.add_argument(
        "--endpoint", default=env("SAGEMAKER_ENDPOINT", "dogbreed"), help="endpoint name (SAGEMAKER_ENDPOINT)"
    )
    g.add_argument(
        "--registry",
        default=env("REGISTRY"),
        help="registry the images were pushed to (REGISTRY; default: ECR of the account and region)",
    )
    g.add_argument("--tag", default=env("TAG", "latest"), help="image tag (TAG)")
    g.add_argument("--train-repository", default=env("TRAIN_IMAGE", "dogbreed-train"))
    g.add_argument("--serve-repository", default=env("SERVE_IMAGE", "dogbreed-serve"))
    g.add_argument("--train-image", default=env("TRAIN_IMAGE_URI"), help="full training image URI (TRAIN_IMAGE_URI)")
    g.add_argument("--serve-image", default=env("SERVE_IMAGE_URI"), help="full serving image URI (SERVE_IMAGE_URI)")
    g.add_argument("--poll", type=float, default=30, help="seconds between status checks while waiting")
    g.add_argument("--verbose", action="store_true", help="show the SageMaker SDK's log lines too")

    jobs = argparse.ArgumentParser(add_help=False)
    j = jobs.add_argument_group("jobs")
    j.add_argument(
        "--data",
        default=env("SAGEMAKER_DATA"),
        help="training channel: s3://BUCKET/PREFIX/ or a local folder (synced to PREFIX/data/NAME/)",
    )
    j.add_argument("--instance-type", default=env("TRAIN_INSTANCE_TYPE", "ml.g4dn.xlarge"), help="TRAIN_INSTANCE_TYPE")
    j.add_argument("-H", "--hyperparameter", action="append", default=[], metavar="NAME=VALUE")
    j.add_argument(
        "--spot",
        action=argparse.BooleanOptionalAction,
        default=settings.flag("SAGEMAKER_SPOT"),
        help="managed spot training (SAGEMAKER_SPOT=true)",
    )
    j.add_argument("--max-run", type=int, default=MAX_RUN_SECONDS, help="seconds per training job")
    j.add_argument("--max-wait", type=int, help="spot: seconds including waits for capacity (default 2 x max-run)")
    j.add_argument("--job-name")

    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for the job and print its result (default)",
    )
    return Parents(common, jobs, waiting)
