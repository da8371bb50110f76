"""The training image's ``train`` command: the sagemaker-training toolkit, with stop signals passed on.

SageMaker starts a training container as ``train`` under tini, which signals only its direct child. The
toolkit's own ``train`` neither handles SIGTERM nor passes it on, so ``docker stop`` (a stopped job, a spot
interruption) ended it at once and the training script with it: no log line, no checkpoint of the current
step, no failure file. This command runs the same toolkit in-process and relays SIGTERM and SIGINT to the
script the toolkit started, then keeps waiting for it. The script stops at a batch boundary, checkpoints,
writes the failure file and exits non-zero, and the toolkit reports that as the job's end.

The toolkit then runs the script through :func:`run_entry_point`, its framework entry point
(``SAGEMAKER_TRAINING_MODULE``): under ``torchrun`` when the job sets ``sagemaker_torch_distributed_enabled``
(the SageMaker SDK's ``torch_distributed`` distribution), as one process otherwise.
"""

from __future__ import annotations

import contextlib
import os
import signal

import psutil

from dogbreed.sagemaker_env import TORCH_DISTRIBUTED

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
        with contextlib.suppress(psutil.Error):
            process.send_signal(signum)


def main() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, relay)
    from sagemaker_training.cli.train import main as toolkit_train  # sets up its logging at import

    toolkit_train()


def run_entry_point() -> None:
    """Run the job's script with the toolkit's own runners: its torchrun launcher (``TorchDistributedRunner``:
    one process per GPU, or one per host on CPU, on every host, master address and node rank filled in) when
    the job asks for torch_distributed, a single process otherwise."""
    from sagemaker_training import entry_point, environment, runner

    env = environment.Environment()
    distributed = str(env.additional_framework_parameters.get(TORCH_DISTRIBUTED, False)).lower() == "true"
    entry_point.run(
        env.module_dir,
        env.user_entry_point,
        env.to_cmd_args(),
        env.to_env_vars(),
        runner_type=runner.RunnerType.TorchDistributed if distributed else runner.RunnerType.Process,
    )
