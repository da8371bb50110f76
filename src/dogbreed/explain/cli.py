"""``dogbreed explain`` (``make explain``): why the model chose a breed, for one image or a folder.

    dogbreed explain IMAGE_OR_FOLDER... (--artifact PATH | --local-port PORT | --endpoint NAME) [--target T]

The model is asked as a black box, where it runs: an artifact folder or
``model.tar.gz`` in this process, the ``make local-serve`` container, or a
SageMaker endpoint, the last two by TargetModel. The report
(``explain-report.html``) and ``explanations.json`` go to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from dogbreed.errors import DataError, run_cli
from dogbreed.explain import bias
from dogbreed.explain.explainer import DEFAULT_SAMPLES, PredictorClassifier, Settings, explain
from dogbreed.explain.report import ImageResult, Report
from dogbreed.explain.superpixels import DEFAULT_COMPACTNESS, DEFAULT_SEGMENTS, DEFAULT_SIDE, IMAGENET_MEAN_RGB
from dogbreed.images import ImageDecodeError, open_rgb
from dogbreed.labels import display_label
from dogbreed.progress import is_interactive

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
log = logging.getLogger("dogbreed.explain")


def baseline_arg(value: str) -> str | tuple[int, ...]:
    if value in ("mean", "imagenet"):
        return "mean" if value == "mean" else IMAGENET_MEAN_RGB
    parts = value.split(",")
    if len(parts) == 3 and all(p.strip().isdigit() and int(p) <= 255 for p in parts):
        return tuple(int(p) for p in parts)
    raise argparse.ArgumentTypeError("use imagenet, mean or an R,G,B colour such as 128,128,128")


def get_args_parser(prog: str = "dogbreed explain") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path, help="images, or folders searched for .jpg and .png")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--artifact", type=Path, help="a model folder (metadata.json, ONNX graph) or model.tar.gz")
    where.add_argument("--local-port", type=int, help="the make local-serve container on 127.0.0.1:PORT")
    where.add_argument("--endpoint", help="a SageMaker endpoint's name")
    parser.add_argument("--target", help="TargetModel for --local-port and --endpoint (a multi-model endpoint's)")
    parser.add_argument("--region", help="the endpoint's region (default: AWS_REGION)")
    parser.add_argument("--out", type=Path, default=Path("build/explain"), help="where the report goes")
    parser.add_argument("--segments", type=int, default=DEFAULT_SEGMENTS, help="SLIC segments to ask for")
    parser.add_argument("--compactness", type=float, default=DEFAULT_COMPACTNESS, help="SLIC's compactness")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="Kernel SHAP coalitions per image")
    parser.add_argument("--seed", type=int, default=0, help="the sampling seed: the same seed, the same values")
    parser.add_argument("--baseline", type=baseline_arg, default=IMAGENET_MEAN_RGB, help="imagenet, mean or R,G,B")
    parser.add_argument("--side", type=int, default=DEFAULT_SIDE, help="the explained view's side in pixels")
    parser.add_argument("--top-k", type=int, default=5, help="predictions listed per image")
    parser.add_argument("--explain-top-k", type=int, default=1, help="classes with a heat map per image")
    parser.add_argument("--max-images", type=int, default=20, help="images explained at most, in name order")
    parser.add_argument("--metrics", type=Path, help="a training job's metrics.json: the class-balance section")
    scored = parser.add_mutually_exclusive_group()
    scored.add_argument("--transform-output", type=Path, help="a batch transform's output folder to score")
    scored.add_argument("--score", type=Path, help="a folder of labelled images (CLASS_FOLDER/IMAGE) to score")
    return parser


def image_files(inputs: list[Path], limit: int) -> list[Path]:
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path} does not exist")
    if not files:
        raise DataError("no .jpg or .png images in " + ", ".join(map(str, inputs)))
    return files[:limit]


def open_image(path: Path) -> Image.Image:
    """``path`` decoded as serving decodes an upload: upright RGB, refused past the pixel bound."""
    try:
        return open_rgb(path)
    except ImageDecodeError as exc:
        raise DataError(f"{path}: {exc}") from None


@contextlib.contextmanager
def classifier_for(args: argparse.Namespace) -> Iterator[tuple[Any, str]]:
    """The black box the arguments name, and words for it."""
    if args.artifact is not None:
        from dogbreed.artifact import read_metadata
        from dogbreed.serving.inference import Predictor
        from dogbreed.serving.store import unpacked

        with contextlib.ExitStack() as stack:
            folder = args.artifact
            if folder.is_file():
                folder = stack.enter_context(unpacked(folder, Path(stack.enter_context(tempfile.TemporaryDirectory()))))
            elif not folder.is_dir():
                raise DataError(f"{args.artifact} is neither a model folder nor a model.tar.gz")
            yield PredictorClassifier(Predictor(folder, read_metadata(folder))), f"artifact {args.artifact}"
        return
    from dogbreed.explain.remote import EndpointClassifier

    if args.local_port is not None:
        from dogbreed.workflows import sdk

        where = f"the local serving container on 127.0.0.1:{args.local_port}"
        yield EndpointClassifier(sdk.local_runtime(args.local_port), "local", args.target, where), where
        return
    from dogbreed.workflows.aws import open_session

    runtime = open_session(args.region).client("sagemaker-runtime")
    where = f"endpoint {args.endpoint}" + (f", target {args.target}" if args.target else "")
    yield EndpointClassifier(runtime, args.endpoint, args.target, where), where


def explain_all(args: argparse.Namespace, classifier: Any, files: list[Path], settings: Settings) -> list[ImageResult]:
    """Each file's explanation: a progress bar over the model evaluations in a terminal, a line per image in
    a log."""
    results = []
    total = len(files) * (settings.samples + 2)
    with tqdm(total=total, unit="evaluation", desc="explain", disable=not is_interactive(), leave=False) as bar:
        for path in files:
            explanation = explain(open_image(path), classifier, settings, progress=bar.update)
            classes = explanation.top(max(1, args.explain_top_k))
            results.append(ImageResult(str(path), explanation, classes, args.top_k))
            top = classes[0]
            message = (
                f"{path.name}: {explanation.labels[top]} {explanation.probabilities[top]:.3f}, "
                f"{explanation.evaluations} evaluations in {explanation.seconds:.1f} s"
            )
            if bar.disable:
                log.info(message)
            else:
                bar.write(message)
    return results


def scored_pairs(classifier: Any, folder: Path) -> list[tuple[str, str]]:
    """(true, predicted) labels of a labelled folder's images, 16 at a time."""
    files = image_files([folder], sys.maxsize)
    pairs = []
    for start in range(0, len(files), 16):
        chunk = files[start : start + 16]
        probabilities = classifier.probabilities_of_files([path.read_bytes() for path in chunk])
        for path, row in zip(chunk, probabilities, strict=True):
            pairs.append((display_label(path.parent.name), classifier.labels[int(row.argmax())]))
    return pairs


def build(args: argparse.Namespace) -> Path:
    settings = Settings(args.segments, args.compactness, args.samples, args.seed, args.baseline, args.side)
    files = image_files(args.inputs, args.max_images)
    with classifier_for(args) as (classifier, where):
        report = Report(where, settings, explain_all(args, classifier, files, settings))
        if args.metrics is not None:
            report.balance = bias.balance_from_metrics(read_json(args.metrics))
        if args.score is not None:
            report.confusion = bias.Confusion.of_pairs(scored_pairs(classifier, args.score), list(classifier.labels))
            report.confusion_source = f"{args.score}, predicted by {where}"
    if args.transform_output is not None:
        report.confusion = bias.Confusion.of_pairs(bias.transform_pairs(args.transform_output))
        report.confusion_source = f"batch transform output {args.transform_output}"
    return report.write(args.out)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def main(args: argparse.Namespace, prog: str = "dogbreed explain") -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # The SDK's local client warns on every call that it found no rootless Docker: nothing to act on here.
    logging.getLogger("sagemaker").setLevel(logging.ERROR)
    return run_cli(prog, lambda: print(f"report: {build(args)}"))


def run(argv: list[str] | None = None, prog: str = "dogbreed explain") -> int:
    return main(get_args_parser(prog).parse_args(argv), prog)
