"""What training, tuning and transform jobs share: the request parts they have in common, and waiting for a job
to end.

The commands send SageMaker's own requests (CreateTrainingJob, CreateHyperParameterTuningJob, ...) through
boto3, every field set here, so that what a job gets is what this code says, and what the tests assert whole.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from dogbreed.workflows.aws import CloudError, aws_errors

# The states a job ends in; DescribeX answers one of these once it is over.
ENDED = ("Completed", "Failed", "Stopped")


def s3_channel(name: str, uri: str) -> dict[str, Any]:
    """An input channel of a training job: every object under ``uri``, on every instance."""
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}
        },
    }


def algorithm(image: str) -> dict[str, Any]:
    """The image, and the metric lines SageMaker reads from its log (the tuning objective among them)."""
    from dogbreed.training.metrics import METRIC_DEFINITIONS

    return {"TrainingInputMode": "File", "TrainingImage": image, "MetricDefinitions": METRIC_DEFINITIONS}


def spot_settings(args: argparse.Namespace, checkpoint_uri: str | None) -> dict[str, Any]:
    """StoppingCondition, and with --spot managed spot training (and where SageMaker keeps /opt/ml/checkpoints)."""
    stopping: dict[str, Any] = {"MaxRuntimeInSeconds": args.max_run}
    job_settings: dict[str, Any] = {"StoppingCondition": stopping}
    if args.spot:
        stopping["MaxWaitTimeInSeconds"] = args.max_wait or 2 * args.max_run
        job_settings["EnableManagedSpotTraining"] = True
        if checkpoint_uri:
            job_settings["CheckpointConfig"] = {"S3Uri": checkpoint_uri}
    return job_settings


def wait_for_end(
    describe: Callable[[], dict[str, Any]], status_key: str, what: str, poll: float, ended: tuple[str, ...] = ENDED
) -> dict[str, Any]:
    """Describe the job (or endpoint) every ``poll`` seconds until its status is one of ``ended``; Failed is a
    :class:`CloudError` with SageMaker's reason."""
    while True:
        with aws_errors():
            description = describe()
        status = description[status_key]
        if status == "Failed":
            raise CloudError(f"{what} failed: {' '.join(str(description.get('FailureReason', '')).split())}")
        if status in ended:
            return description
        time.sleep(poll)


def wait_and_report(args: argparse.Namespace, wait: Callable[[], Any], report: Callable[[], None], later: str) -> int:
    """Wait for a started job and report on it; with --no-wait, say how to look later."""
    if not args.wait:
        print(f"not waiting; later: {later}")
        return 0
    wait()
    print()
    report()
    return 0
