"""Endpoint autoscaling: Application Auto Scaling with target tracking on invocations per instance.

``deploy --max-instances N`` registers the endpoint's variant as a scalable
target (``--min-instances`` to N) and puts one target-tracking policy on
``SageMakerVariantInvocationsPerInstance`` (``--target-invocations``, per
instance per minute), with scale-in and scale-out cooldowns. Both calls are
upserts, so deploying again updates them in place. SageMaker asks that a
variant under autoscaling is deregistered before ``UpdateEndpoint`` and
registered again after it, which :func:`deregister` and :func:`apply` do
around an update; ``teardown`` deregisters.
"""

from __future__ import annotations

import argparse
from typing import Any

from dogbreed.workflows.aws import Aws, CloudError, aws_errors

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
VARIANT = "AllTraffic"  # the one production variant deploy creates (SageMaker's usual name for it)
METRIC = "SageMakerVariantInvocationsPerInstance"


def resource_id(endpoint: str) -> str:
    return f"endpoint/{endpoint}/variant/{VARIANT}"


def min_instances(args: argparse.Namespace) -> int:
    return args.min_instances if args.min_instances is not None else args.instance_count


def requested(args: argparse.Namespace) -> bool:
    """Whether deploy was asked to scale; the bounds checked before any call."""
    if args.max_instances is None:
        if args.min_instances is not None or args.target_invocations is not None:
            raise CloudError("--min-instances and --target-invocations need --max-instances")
        return False
    minimum = min_instances(args)
    if not 1 <= minimum <= args.max_instances:
        raise CloudError(f"instances must satisfy 1 <= --min-instances ({minimum}) <= --max-instances")
    if args.target_invocations is None or args.target_invocations <= 0:
        raise CloudError("--target-invocations (invocations per instance per minute) must be positive")
    return True


def registered(aws: Aws, endpoint: str) -> bool:
    with aws_errors():
        found = aws.autoscaling.describe_scalable_targets(
            ServiceNamespace=NAMESPACE, ResourceIds=[resource_id(endpoint)], ScalableDimension=DIMENSION
        )
    return bool(found.get("ScalableTargets"))


def deregister(aws: Aws, endpoint: str) -> bool:
    """Remove the variant's scalable target (and so its policies); False when there was none."""
    if not registered(aws, endpoint):
        return False
    with aws_errors():
        aws.autoscaling.deregister_scalable_target(
            ServiceNamespace=NAMESPACE, ResourceId=resource_id(endpoint), ScalableDimension=DIMENSION
        )
    return True


def apply(aws: Aws, args: argparse.Namespace) -> dict[str, Any]:
    """Register the variant and put the target-tracking policy; returns the policy's configuration."""
    minimum = min_instances(args)
    policy = {
        "TargetValue": float(args.target_invocations),
        "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
        "ScaleInCooldown": args.scale_in_cooldown,
        "ScaleOutCooldown": args.scale_out_cooldown,
    }
    with aws_errors():
        aws.autoscaling.register_scalable_target(
            ServiceNamespace=NAMESPACE,
            ResourceId=resource_id(args.endpoint),
            ScalableDimension=DIMENSION,
            MinCapacity=minimum,
            MaxCapacity=args.max_instances,
        )
        aws.autoscaling.put_scaling_policy(
            PolicyName=f"{args.endpoint}-invocations-per-instance",
            ServiceNamespace=NAMESPACE,
            ResourceId=resource_id(args.endpoint),
            ScalableDimension=DIMENSION,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration=policy,
        )
    print(
        f"autoscaling: {minimum} to {args.max_instances} instances, "
        f"target {args.target_invocations:g} invocations per instance per minute"
    )
    return policy


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("autoscaling (Application Auto Scaling, target tracking)")
    g.add_argument("--max-instances", type=int, help="scale the variant up to this many instances")
    g.add_argument("--min-instances", type=int, help="and down to this many (default: --instance-count)")
    g.add_argument("--target-invocations", type=float, help="invocations per instance per minute the policy aims at")
    g.add_argument("--scale-in-cooldown", type=int, default=300, help="seconds between scale-ins (300)")
    g.add_argument("--scale-out-cooldown", type=int, default=60, help="seconds between scale-outs (60)")
