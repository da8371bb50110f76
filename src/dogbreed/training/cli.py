"""Command line of train_model.py and hpo.py.

Hyperparameters are kebab-case flags. They accept values the way SageMaker
passes hyperparameters (every value a string, booleans as "True"/"False").
Paths are flags too, each falling back to its SageMaker environment variable,
so the same command runs on a laptop, in local mode and in a real job.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from dogbreed import sagemaker_env, settings
from dogbreed.errors import DogbreedError
from dogbreed.training.data import BAD_IMAGE_POLICIES
from dogbreed.training.debugger import DEBUG_COLLECTIONS
from dogbreed.training.models import ARCHITECTURES, BATCHNORM_STATS_IMAGES

log = logging.getLogger("dogbreed")


def str2bool(value: str | bool) -> bool:
    parsed = settings.parse_bool(value)
    if parsed is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
    return parsed


def _number(kind, *, minimum=None, maximum=None, exclusive_minimum=False):
    def parse(value: str):
        try:
            number = kind(float(value)) if kind is int and str(value).strip().endswith(".0") else kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {value!r}"
            ) from None
        if minimum is not None and (number <= minimum if exclusive_minimum else number < minimum):
            raise argparse.ArgumentTypeError(
                f"must be {'greater than' if exclusive_minimum else 'at least'} {minimum}, got {value}"
            )
        if maximum is not None and number > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return number

    return parse


def _collections(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = sorted(set(names) - set(DEBUG_COLLECTIONS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {','.join(DEBUG_COLLECTIONS)}, got {value!r}")
    return names


class TrainingArgumentParser(argparse.ArgumentParser):
    """Reports a bad flag in one line, records it as the job's failure, exits 2."""

    def error(self, message: str):
        line = f"{self.prog}: error: {message}"
        print(line, file=sys.stderr)
        sagemaker_env.write_failure(f"bad hyperparameter: {message}")
        sys.exit(sagemaker_env.EXIT_USAGE)


def get_args_parser(prog: str = "train_model.py", description: str | None = None) -> argparse.ArgumentParser:
    """The training flags. Call it at run time: path defaults come from the environment."""
    parser = TrainingArgumentParser(
        prog=prog,
        description=description or "Transfer-learn a torchvision classifier on a dogImages-style dataset.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bool_flag: dict[str, Any] = dict(type=str2bool, nargs="?", const=True, metavar="BOOL")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default="resnet18", choices=sorted(ARCHITECTURES), help="architecture")
    model.add_argument(
        "--pretrained", default=True, **bool_flag, help="start from ImageNet weights (false: random init)"
    )
    model.add_argument(
        "--pretrained-weights",
        type=Path,
        default=sagemaker_env.channel_dir("pretrained"),
        help="ImageNet weights file, or a folder holding torchvision's file (e.g. resnet18-f37072fd.pth) or "
        "MODEL.pth; default: the 'pretrained' channel (SM_CHANNEL_PRETRAINED); unset: torchvision's download",
    )
    model.add_argument(
        "--freeze-backbone",
        default=True,
        **bool_flag,
        help="train only the new classifier head (feature extraction); false: fine-tune all",
    )

    hp = parser.add_argument_group("optimisation")
    hp.add_argument("--epochs", type=_number(int, minimum=1), default=10, help="passes over the training set")
    hp.add_argument(
        "--batch-size", type=_number(int, minimum=1), default=32, help="images per step, in each process under torchrun"
    )
    hp.add_argument(
        "--learning-rate",
        "--lr",
        type=_number(float, minimum=0, exclusive_minimum=True),
        default=0.001,
        help="the optimizer's step size",
    )
    hp.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd"], help="the optimizer")
    hp.add_argument("--momentum", type=_number(float, minimum=0, maximum=1), default=0.9, help="SGD only")
    hp.add_argument(
        "--weight-decay", type=_number(float, minimum=0), default=0.0, help="L2 penalty (decoupled for adamw)"
    )
    hp.add_argument(
        "--image-size",
        type=_number(int, minimum=16, maximum=1024),
        default=224,
        help="square input side in pixels; evaluation resizes to 256/224 of it, then centre-crops",
    )
    hp.add_argument(
        "--patience",
        type=_number(int, minimum=0),
        default=3,
        help="early stopping: epochs without a validation-accuracy gain (0: off)",
    )
    hp.add_argument("--seed", type=_number(int, minimum=0), default=42, help="seeds every random generator")
    hp.add_argument(
        "--recompute-bn-stats",
        default=None,
        **bool_flag,
        help="before each evaluation, recompute BatchNorm's running statistics on up to "
        f"{BATCHNORM_STATS_IMAGES} training images (evaluation transform) when the backbone "
        "trains; default: per architecture (true for mobilenet_v2, false for the ResNets)",
    )
    hp.add_argument(
        "--amp",
        default=False,
        **bool_flag,
        help="mixed precision: float16 on CUDA; on CPU, bfloat16 only when a few steps timed both ways on a copy "
        "of the model find it faster (without AMX it can be 5-15x slower); the log says which won",
    )

    onnx = parser.add_argument_group(
        "ONNX variants for serving (model.onnx always; model.int8.onnx unless --int8 false)"
    )
    onnx.add_argument("--int8", default=True, **bool_flag, help="also write the int8-quantized model.int8.onnx")
    onnx.add_argument(
        "--int8-calibration-images",
        type=_number(int, minimum=1),
        default=64,
        help="training images (through the evaluation transform) that calibrate int8",
    )
    onnx.add_argument(
        "--int8-max-accuracy-drop",
        type=_number(float, minimum=0, maximum=100),
        default=1.0,
        help="serve int8 only if its test accuracy is at most this many points below fp32's",
    )
    onnx.add_argument(
        "--int8-min-agreement",
        type=_number(float, minimum=0, maximum=1),
        default=0.98,
        help="serve int8 only if it agrees with fp32 on the top-1 class for this share of test images",
    )

    runtime = parser.add_argument_group("runtime")
    runtime.add_argument(
        "--workers",
        type=_number(int, minimum=0),
        default=min(4, sagemaker_env.num_cpus()),
        help="DataLoader worker processes",
    )
    runtime.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when present, else the CPU"
    )
    runtime.add_argument(
        "--bad-images",
        default="skip",
        choices=list(BAD_IMAGE_POLICIES),
        help="what to do with files that do not decode: skip them (listed in the log and metrics.json) or fail the job",
    )
    runtime.add_argument(
        "--log-interval",
        type=_number(int, minimum=1),
        default=20,
        help="steps between progress lines when stdout is not a terminal",
    )

    paths = parser.add_argument_group("paths (each defaults to its SageMaker environment variable)")
    paths.add_argument(
        "--data-dir",
        type=Path,
        default=sagemaker_env.channel_dir("training"),
        help="folder holding train/ valid/ test/ (SM_CHANNEL_TRAINING)",
    )
    for split in ("train", "valid", "test"):
        paths.add_argument(
            f"--{split}-dir",
            type=Path,
            default=sagemaker_env.channel_dir(split),
            help=f"the {split} split, when it is its own channel (SM_CHANNEL_{split.upper()})",
        )
    paths.add_argument("--model-dir", type=Path, default=sagemaker_env.model_dir(), help="SM_MODEL_DIR")
    paths.add_argument(
        "--output-data-dir",
        type=Path,
        default=sagemaker_env.output_data_dir(),
        help="metrics and plots (SM_OUTPUT_DATA_DIR)",
    )
    paths.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=sagemaker_env.checkpoint_dir(),
        help="epoch checkpoints; a checkpoint found here is resumed",
    )

    debug = parser.add_argument_group("smdebug hook, rules and report (a job's Debugger config overrides the hook)")
    debug.add_argument(
        "--debug-hook",
        default=True,
        **bool_flag,
        help="save smdebug tensors, run the rules (rules.json) and write debugger-report.html",
    )
    debug.add_argument(
        "--debug-out-dir",
        type=Path,
        default=None,
        help="write smdebug tensors here; default: /opt/ml/output/tensors in a SageMaker job, "
        "else tensors/ in the output data folder",
    )
    debug.add_argument(
        "--debug-save-interval",
        type=_number(int, minimum=1),
        default=10,
        help="save weight and gradient reductions every N steps (losses: every step)",
    )
    debug.add_argument(
        "--debug-collections",
        type=_collections,
        default=["losses", "weights", "gradients"],
        help=f"comma-separated, from {','.join(DEBUG_COLLECTIONS)}",
    )
    return parser


def configure_logging(group=None) -> None:
    """Plain log lines on stdout; under torchrun each marked with its rank, and progress from rank 0 only."""
    prefix = f"[rank {group.rank}] " if group is not None and group.active else ""
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s {prefix}%(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stdout,
        force=True,
    )
    # smdebug logs every hook decision at INFO.
    logging.getLogger("smdebug").setLevel(logging.WARNING)
    if group is not None and not group.is_main:
        logging.getLogger("dogbreed.progress").setLevel(logging.WARNING)


def main(args: argparse.Namespace, prog: str = "train_model.py") -> int:
    """Run one training job; returns the process exit code."""
    # torch is imported after argument errors are out.
    from dogbreed.training.distributed import from_environment
    from dogbreed.training.engine import Interrupted, fit

    group = from_environment()
    configure_logging(group)
    # One process per host clears it, before the process group forms: no rank can have failed yet.
    if group.local_rank == 0 and sagemaker_env.clear_failure():
        log.info("removed the failure file of an earlier run in this output folder")
    try:
        fit(args)
    except Interrupted as exc:
        message = (
            f"stopped by {exc}; the checkpoint in {args.checkpoint_dir} resumes the job from there: start "
            "it again with the same checkpoint folder (on SageMaker, the same checkpoint_s3_uri)"
        )
        log.warning(message)
        sagemaker_env.write_failure(message, first_only=group.active)
        return sagemaker_env.EXIT_INTERRUPTED
    except DogbreedError as exc:
        message = str(exc)
        print(f"{prog}: error: {message}", file=sys.stderr)
        sagemaker_env.write_failure(message, first_only=group.active)
        return sagemaker_env.EXIT_FAILURE
    except Exception as exc:
        traceback.print_exc()
        message = f"unexpected error: {type(exc).__name__}: {exc}"
        if group.active:
            # Which process failed; a rank that fails on a collective usually lost a peer that ended first.
            message = f"rank {group.rank} of {group.world_size}: {message}"
        print(f"{prog}: error: {message}", file=sys.stderr)
        sagemaker_env.write_failure(message, first_only=group.active)
        return sagemaker_env.EXIT_FAILURE
    return sagemaker_env.EXIT_OK


def run(argv: list[str] | None = None, prog: str = "dogbreed train") -> int:
    """The ``dogbreed train`` command: train_model.py, installed."""
    return main(get_args_parser(prog=prog).parse_args(argv), prog=prog)
