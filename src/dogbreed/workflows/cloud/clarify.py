"""``clarify``: a SageMaker Clarify explainability job over an S3 folder of images, against the endpoint.

Clarify's own image explainer (closed source, in AWS's processing container)
runs Kernel SHAP over SLIC superpixels, with the parameters ``make explain``
uses locally, calling one TargetModel of the multi-model endpoint as its
shadow model. The model's answer carries every class's probability because
the job sends ``probabilities=true`` as the custom attribute; the class names
come from a training job's ``metrics.json`` or the artifact's
``metadata.json`` when given. The report and the per-image heat maps land
under ``--output``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from dogbreed.explain.explainer import DEFAULT_SAMPLES
from dogbreed.explain.superpixels import DEFAULT_COMPACTNESS, DEFAULT_SEGMENTS
from dogbreed.workflows import sdk
from dogbreed.workflows.aws import Aws, CloudError, aws_errors
from dogbreed.workflows.cloud import config
from dogbreed.workflows.cloud.config import DEFAULT_TARGETS, Parents, check_target, env, require_role, resolve_bucket
from dogbreed.workflows.cloud.jobs import wait_for_end
from dogbreed.workflows.cloud.storage import require_image_folder

# Where the serving image's JSON answer keeps the probabilities (JMESPath), with probabilities=true.
PROBABILITIES = "results[0].probabilities"


def class_labels(path: str | None) -> list[str] | None:
    """The class names in a ``metrics.json`` or ``metadata.json`` (both have ``labels``); None without a file."""
    if not path:
        return None
    try:
        labels = json.loads(Path(path).read_text(encoding="utf-8"))["labels"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CloudError(f"--labels {path}: no list of labels there ({exc.__class__.__name__})") from None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise CloudError(f"--labels {path}: labels must be a list of class names")
    return labels


def analysis(args: argparse.Namespace, labels: list[str] | None) -> tuple[Any, Any, Any]:
    """Clarify's model, predicted-label and SHAP configurations for the endpoint's TargetModel."""
    from sagemaker.core import clarify

    model = clarify.ModelConfig(
        endpoint_name=args.endpoint,
        target_model=check_target(args.target),
        content_type="image/jpeg",
        accept_type="application/json",
        custom_attributes="probabilities=true",
    )
    scores = clarify.ModelPredictedLabelConfig(probability=PROBABILITIES, label_headers=labels)
    image = clarify.ImageConfig(
        model_type="IMAGE_CLASSIFICATION", num_segments=args.segments, segment_compactness=args.compactness
    )
    shap = clarify.SHAPConfig(num_samples=args.samples, seed=args.seed, image_config=image)
    return model, scores, shap


def cmd_clarify(aws: Aws, args: argparse.Namespace) -> int:
    from sagemaker.core import clarify

    role = require_role(args)
    require_image_folder(aws, args.input, "JPEG images")
    labels = class_labels(args.labels)
    bucket = resolve_bucket(aws, args)
    name = f"{args.endpoint}-clarify-{config.stamp()}"
    output = args.output or f"s3://{bucket}/{args.prefix}/clarify/{name}/"
    model, scores, shap = analysis(args, labels)
    data = clarify.DataConfig(
        s3_data_input_path=args.input, s3_output_path=output.rstrip("/"), dataset_type="application/x-image"
    )
    with aws_errors():
        processor = clarify.SageMakerClarifyProcessor(
            role=role,
            instance_count=1,
            instance_type=args.instance_type,
            sagemaker_session=sdk.session(aws.boto_session, aws.sagemaker, aws.runtime),
        )
        processor.run_explainability(data, model, shap, model_scores=scores, wait=False, logs=False, job_name=name)
    print(f"clarify job: {name} on {args.instance_type}, explaining {args.target} of endpoint {args.endpoint}")
    if not args.wait:
        print(f"not waiting; the report will be under {output}")
        return 0
    wait_for_end(
        lambda: aws.sagemaker.describe_processing_job(ProcessingJobName=name),
        "ProcessingJobStatus",
        f"clarify job {name}",
        args.poll,
    )
    print(f"\nreport: {output}report.html (heat maps and SHAP values per image beside it)")
    return 0


def add_clarify(sub: Any, parents: Parents) -> None:
    p = sub.add_parser(
        "clarify",
        parents=[parents.common, parents.waiting],
        help="SageMaker Clarify explainability job over an S3 folder of images",
    )
    p.add_argument("--input", required=True, help="s3://BUCKET/PREFIX/ of JPEG images")
    p.add_argument("--output", help="default: s3://BUCKET/PREFIX/clarify/JOB/")
    p.add_argument("--target", default=DEFAULT_TARGETS[0], help="which of the endpoint's models (default: %(default)s)")
    p.add_argument("--labels", help="a metrics.json or metadata.json whose labels name the classes in the report")
    p.add_argument("--segments", type=int, default=DEFAULT_SEGMENTS, help="SLIC segments (ImageConfig.num_segments)")
    # The SDK's analysis-config schema takes a whole number here, though SLIC itself takes any positive one.
    p.add_argument(
        "--compactness", type=int, default=int(DEFAULT_COMPACTNESS), help="ImageConfig.segment_compactness (whole)"
    )
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="SHAPConfig.num_samples")
    p.add_argument("--seed", type=int, default=0, help="SHAPConfig.seed")
    p.add_argument(
        "--instance-type", default=env("CLARIFY_INSTANCE_TYPE", "ml.m5.xlarge"), help="CLARIFY_INSTANCE_TYPE"
    )
    p.set_defaults(run=cmd_clarify)
