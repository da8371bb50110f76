"""The training image's ``train`` command: the sagemaker-training toolkit, with stop signals passed on.

SageMaker starts a training container as ``train`` under tini, which signals only its direct child. The
toolkit's own ``train`` neither handles SIGTERM nor passes it on, so ``docker stop`` (a stopped job, a spot
interruption) ended it at once and the training script with it: no log line, no checkpoint of the current
step, no failure file. This command runs the same toolkit in-process and relays SIGTERM and SIGINT to the
script the toolkit started, then keeps waiting for it. The script stops at a batch boundary, checkpoints,
writes the failure file and exits non-zero, and the toolkit reports that as the job's end.
"""

from __future__ import annotations

import os
import signal

import psutil

# ``sh -c CMD`` may stay in between when the shell does not exec its one command.
SHELLS = frozenset({"sh", "dash", "bash"})
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def script_processes(parent: psutil.Process) -> list[psutil.Process]:
    """What ``parent`` started, looking through shells: the training script (or torchrun), not its workers."""
    found = []
    for child in parent.children():
        try:
            name = child.name()
        except psutil.Error:  # it ended meanwhile
            continue
        found.extend(script_processes(child) if name in SHELLS else [child])
    return found


def relay(signum: int, _frame=None) -> None:
    """Pass ``signum`` on to the script; with no script running yet, stop as the signal asks."""
    targets = script_processes(psutil.Process())
    if not targets:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    for process in targets:
        try:
            process.send_signal(signum)
        except psutil.Error:
            pass


def main() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, relay)
    from sagemaker_training.cli.train import main as toolkit_train  # sets up its logging at import

    toolkit_train()
