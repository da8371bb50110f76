"""``dogbreed``: the project's one command line, a subcommand per job.

Each command lives in the module of its concern, which offers ``run(argv, prog) -> int``: it parses its
arguments with its own ``get_args_parser(prog)``, does the work and reports a user's error as one line,
``PROG: error: ...``, with a non-zero exit (``dogbreed.errors.run_cli``). Training keeps SageMaker's contract
as well: the failure file and its exit codes. The module is imported only when its command runs, so
``dogbreed --help`` and the serving commands never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NamedTuple

from dogbreed import __version__


class Command(NamedTuple):
    module: str
    summary: str
    extra: str | None = None  # the optional dependencies (pyproject.toml) it needs, None for the core ones


COMMANDS: dict[str, Command] = {
    "train": Command("dogbreed.training.cli", "train a classifier natively (train_model.py, installed)", "train"),
    "export": Command(
        "dogbreed.training.export_cli", "add the ONNX variants to an artifact made before they existed", "train"
    ),
    "debug-report": Command(
        "dogbreed.training.debug_report", "rebuild the Debugger report from a saved smdebug trial", "train"
    ),
    "package": Command("dogbreed.package", "pack an artifact as model.tar.gz under a target path of a model store"),
    "serve": Command("dogbreed.serving.server", "serve a model store with multi-model-server", "serve"),
    "explain": Command("dogbreed.explain.cli", "explain a model's answers with Kernel SHAP over superpixels", "serve"),
    "download": Command("dogbreed.download", "download, verify and unpack the dogImages dataset"),
    "local": Command(
        "dogbreed.workflows.local", "train or tune with the training image in SageMaker local mode", "cloud"
    ),
    "registry": Command("dogbreed.workflows.registry", "push the images to ECR or another registry"),
    "cloud": Command(
        "dogbreed.workflows.cloud.cli", "tune, train, host, invoke and batch-transform on SageMaker", "cloud"
    ),
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dogbreed",
        description="Train and serve image classifiers on Amazon SageMaker.",
        epilog="Each command has its own --help: dogbreed COMMAND --help.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        # The command's own parser reads everything after its name, --help included.
        commands.add_parser(name, help=command.summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, arguments = get_args_parser().parse_known_args(argv)
    command = COMMANDS[args.command]
    prog = f"dogbreed {args.command}"
    try:
        module = importlib.import_module(command.module)
    except ModuleNotFoundError as exc:
        if command.extra is None or (exc.name or "").split(".")[0] == "dogbreed":
            raise
        # One venv need not hold every extra: the workflows' venv has no torch, the training venv no SDK v3 ...
        print(
            f"{prog}: error: this command needs the {command.extra} extra (no module {exc.name} here): "
            f'run it where pip install ".[{command.extra}]" installed it (make venv: train and serve; '
            "make cloud-venv: cloud)",
            file=sys.stderr,
        )
        return 1
    return module.run(arguments, prog=prog)
