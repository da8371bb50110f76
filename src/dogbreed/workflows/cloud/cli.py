"""The ``dogbreed cloud`` command line: one parser with a subcommand per workflow, and ``main``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from dogbreed.errors import run_cli
from dogbreed.workflows import cloud
from dogbreed.workflows.aws import Aws, connect
from dogbreed.workflows.cloud import clarify, endpoint, prediction, training, tuning
from dogbreed.workflows.cloud.config import Parents, parent_parsers

# Each adds one subcommand, whose parser's ``run`` default is the command: run(aws, args) -> exit code.
SUBCOMMANDS: list[Callable[[Any, Parents], None]] = [
    tuning.add_hpo,
    tuning.add_best,
    training.add_train_remote,
    training.add_training_result,
    endpoint.add_deploy,
    endpoint.add_add_model,
    prediction.add_invoke,
    prediction.add_batch_transform,
    clarify.add_clarify,
    endpoint.add_teardown,
]


def get_args_parser(prog: str = "dogbreed cloud") -> argparse.ArgumentParser:
    """The CLI; defaults read the environment when called."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(cloud.__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = parent_parsers()
    for add in SUBCOMMANDS:
        add(sub, parents)
    return parser


def quiet_libraries(verbose: bool) -> None:
    """This project's progress lines on stdout; other libraries' loggers stay at WARNING."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
    logging.getLogger("dogbreed").setLevel(logging.INFO)
    if not verbose:
        # The commands print what matters, and every failure as one line; the SDK's own log lines
        # (job names, troubleshooting links after an error) only repeat it.
        for name in ("sagemaker", "sagemaker.config", "urllib3"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def run(argv: list[str] | None = None, prog: str = "dogbreed cloud", aws: Aws | None = None) -> int:
    """Run one command; ``aws`` replaces the real AWS connection (tests). Errors are reported as the make target
    of the same name reports them: ``deploy: error: ...``."""
    args = get_args_parser(prog).parse_args(argv)
    quiet_libraries(args.verbose)
    try:
        if args.command == "invoke" and args.local_port:
            return run_cli(args.command, lambda: prediction.cmd_invoke(None, args))
        return run_cli(args.command, lambda: args.run(aws or connect(args.region), args))
    except KeyboardInterrupt:
        print(f"{args.command}: interrupted; jobs already started keep running in SageMaker", file=sys.stderr)
        return 130
