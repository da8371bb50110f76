"""Training images per second, one process against two under torchrun (DDP, gloo), on this machine.

Both sides train the same model on the same data through train_model.py started by torchrun, in alternating
rounds so both see the same noise. The rate is the training images of the last epoch over its time, as the
training log states it (data loading included; start-up, validation and the artifact excluded). One process
gets all the machine's cores as torch threads; two get half each, so the machine is shared the same way.

On a 2-core machine this is not a scaling result: two processes split the same two cores and add the
gradient all-reduce. It shows what DDP costs where it cannot help.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import SAMPLE_DATA, TRAIN_SCRIPT, sagemaker_env_for  # noqa: E402

RATE = re.compile(
    r"\[rank 0\] epoch (\d+) took [\d.]+s \(([\d.]+) train images/s\)|"
    r"INFO epoch (\d+) took [\d.]+s \(([\d.]+) train images/s\)"
)


def images_per_second(processes: int, args: list[str], base: Path, epochs: int, cores: int) -> float:
    threads = max(1, cores // processes)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
        str(TRAIN_SCRIPT),
        *args,
        "--epochs",
        str(epochs),
    ]
    result = subprocess.run(
        command,
        env={**sagemaker_env_for(base), "OMP_NUM_THREADS": str(threads)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    rates = {int(m[0] or m[2]): float(m[1] or m[3]) for m in RATE.findall(result.stdout)}
    return rates[epochs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16, help="per process, as train_model.py takes it")
    parser.add_argument("--epochs", type=int, default=2, help="per run; the last one is timed")
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    cores = os.cpu_count() or 1
    args = [
        "--data-dir",
        str(SAMPLE_DATA),
        "--model",
        opts.model,
        "--image-size",
        str(opts.image_size),
        "--batch-size",
        str(opts.batch_size),
        "--pretrained",
        "false",
        "--freeze-backbone",
        "false",
        "--workers",
        "1",
        "--patience",
        "0",
        "--int8",
        "false",
        "--debug-hook",
        "false",
        "--log-interval",
        "1000",
    ]
    rates: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as work:
        for round_ in range(opts.rounds):
            for processes in (1, 2) if round_ % 2 == 0 else (2, 1):
                base = Path(work) / f"{processes}-{round_}"
                rates[processes].append(images_per_second(processes, args, base, opts.epochs, cores))
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(
        json.dumps(
            {
                "model": opts.model,
                "image_size": opts.image_size,
                "batch_per_process": opts.batch_size,
                "cores": cores,
                "rounds": opts.rounds,
                "one_process_images_per_s": rates[1],
                "two_processes_images_per_s": rates[2],
                "ratio_two_over_one": round(two / one, 3),
            }
        )
    )
    print(f"1 process {one:.1f} img/s, 2 processes {two:.1f} img/s (medians of {opts.rounds}): ratio {two / one:.2f}")


if __name__ == "__main__":
    main()
