"""What training and tuning jobs share: managed spot settings, and waiting for a job to end."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from dogbreed.workflows.aws import aws_errors


def spot_settings(args: argparse.Namespace, checkpoint_uri: str | None) -> dict[str, Any]:
    job_settings: dict[str, Any] = {"max_run": args.max_run}
    if args.spot:
        job_settings.update(use_spot_instances=True, max_wait=args.max_wait or 2 * args.max_run)
        if checkpoint_uri:
            job_settings["checkpoint_s3_uri"] = checkpoint_uri
    return job_settings


def wait_and_report(args: argparse.Namespace, wait: Callable[[], Any], report: Callable[[], None], later: str) -> int:
    """Wait for a started job and report on it; with --no-wait, say how to look later."""
    if not args.wait:
        print(f"not waiting; later: {later}")
        return 0
    with aws_errors():
        wait()
    print()
    report()
    return 0
