"""The AWS side of the cloud workflows: one session, settings resolved from flags and environment, one-line errors.

Everything the cloud commands send goes through one :class:`Aws` object:
``sagemaker`` and ``runtime`` (botocore clients), ``s3`` and ``autoscaling``.
The commands that need the SageMaker Python SDK build its session on these
same clients when they run (``sdk.session``), so the others start without
importing it. Tests build an :class:`Aws` around stubbed or emulated clients;
:func:`connect` builds the real one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dogbreed import settings
from dogbreed.errors import DogbreedError


class CloudError(DogbreedError):
    """A problem the user can act on; the CLI prints it as one line and exits 1."""


@dataclass
class Aws:
    boto_session: Any
    sagemaker: Any
    runtime: Any
    s3: Any
    region: str
    account: str | None = None
    autoscaling: Any = None  # Application Auto Scaling, for endpoint autoscaling

    def account_id(self) -> str:
        if self.account is None:
            with aws_errors():
                self.account = self.boto_session.client("sts").get_caller_identity()["Account"]
        return self.account


NO_CREDENTIALS = (
    "no AWS credentials: configure a profile (AWS_PROFILE) or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
)


def open_session(
    region: str | None, region_settings: str = "--region, REGION (make), AWS_REGION or AWS_DEFAULT_REGION"
):
    """A boto3 session for ``region`` (else AWS_REGION / AWS_DEFAULT_REGION / the profile's region).

    A missing region or missing credentials is a one-line :class:`CloudError`;
    ``region_settings`` names where the caller's users set the region.
    """
    import boto3
    import botocore.exceptions

    region = region or settings.text("AWS_REGION") or settings.text("AWS_DEFAULT_REGION")
    try:
        boto_session = boto3.Session(region_name=region) if region else boto3.Session()
        credentials = boto_session.get_credentials()
    except botocore.exceptions.BotoCoreError as exc:
        raise CloudError(f"AWS credentials cannot be read: {exc}") from None
    if not boto_session.region_name:
        raise CloudError(f"no AWS region: set {region_settings}")
    if credentials is None:
        raise CloudError(NO_CREDENTIALS)
    return boto_session


def connect(region: str | None) -> Aws:
    """Clients for ``region``, credentials checked."""
    boto_session = open_session(region)
    return Aws(
        boto_session=boto_session,
        sagemaker=boto_session.client("sagemaker"),
        runtime=boto_session.client("sagemaker-runtime"),
        s3=boto_session.client("s3"),
        region=boto_session.region_name,
        autoscaling=boto_session.client("application-autoscaling"),
    )


def error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def client_error_message(exc) -> str:
    """``AWS Operation failed: Code: Message`` for a botocore ClientError."""
    error = exc.response.get("Error", {})
    return f"AWS {exc.operation_name} failed: {error.get('Code')}: {error.get('Message')}"


@contextlib.contextmanager
def aws_errors() -> Iterator[None]:
    """Turn botocore and SDK failures into a one-line :class:`CloudError`."""
    import botocore.exceptions

    try:
        yield
    except botocore.exceptions.ClientError as exc:
        message = client_error_message(exc)
        if error_code(exc) in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            message += " (the caller or the role lacks this permission; docs/cloud.md: IAM permissions)"
        raise CloudError(message) from None
    except botocore.exceptions.NoCredentialsError:
        raise CloudError(NO_CREDENTIALS) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise CloudError(f"AWS call failed: {exc}") from None


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or len(uri) <= 5:
        raise CloudError(f"not an S3 URI: {uri!r} (expected s3://BUCKET/KEY)")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise CloudError(f"not an S3 URI: {uri!r} (expected s3://BUCKET/KEY)")
    return bucket, key


def s3_object_exists(aws: Aws, bucket: str, key: str) -> bool:
    import botocore.exceptions

    try:
        aws.s3.head_object(Bucket=bucket, Key=key)
        return True
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise


def check_bucket(aws: Aws, bucket: str) -> None:
    import botocore.exceptions

    try:
        aws.s3.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            raise CloudError(
                f"S3 bucket {bucket!r} does not exist: create it, or set --bucket / SAGEMAKER_BUCKET "
                "(unset, the SDK's default bucket sagemaker-REGION-ACCOUNT is used)"
            ) from None
        if error_code(exc) in ("403", "AccessDenied", "Forbidden"):
            raise CloudError(
                f"S3 bucket {bucket!r} is not accessible with these credentials (403): "
                "set --bucket / SAGEMAKER_BUCKET to a bucket you own"
            ) from None
        raise
