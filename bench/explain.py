"""make bench-explain: the time of one explanation, in-process against through the local server.

One 500x375 photo, ResNet18 int8 at 224 pixels (random weights: speed only),
20 SLIC segments and 256 Kernel SHAP samples (258 model evaluations). Three
ways, alternating in rounds so all see the same noise:

- ``in_process``: ``make explain --artifact``, the ONNX graph in this process;
- ``local_server``: ``make explain --local-port``, the perturbed views sent as
  JSON batches of PNGs through the SageMaker SDK's local-mode client to MMS;
- ``inline``: one request with ``explain=true,explain_samples=256`` to MMS,
  the explanation computed in the worker.

Prints JSON: the median seconds of each, and the ratios to in-process.

    python bench/explain.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_latency import TARGETS, Mms, make_artifacts, photos

from dogbreed.artifact import read_metadata
from dogbreed.explain.explainer import PredictorClassifier, Settings, explain
from dogbreed.explain.remote import EndpointClassifier
from dogbreed.serving.inference import Predictor
from dogbreed.workflows.sdk import local_runtime

SETTINGS = Settings(segments=20, samples=256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    logging.getLogger("sagemaker").setLevel(logging.ERROR)  # the local client's warning on every call
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bodies = photos(8)
        _, int8_dir, store = make_artifacts(work, "resnet18", 224, bodies)
        photo = Image.open(io.BytesIO(bodies[0]))
        in_process = PredictorClassifier(Predictor(int8_dir, read_metadata(int8_dir)))
        server = Mms("mms", store, work)
        try:
            server.wait_ready()
            target = TARGETS["mms_int8"]
            remote = EndpointClassifier(local_runtime(server.port), "local", target, "the local server")
            headers = {
                "Content-Type": "image/jpeg",
                "X-Amzn-SageMaker-Target-Model": target,
                "X-Amzn-SageMaker-Custom-Attributes": "explain=true,explain_samples=256,explain_segments=20",
            }
            sides = {
                "in_process": lambda: explain(photo, in_process, SETTINGS),
                "local_server": lambda: explain(photo, remote, SETTINGS),
                "inline": lambda: server.post("/invocations", bodies[0], headers),
            }
            for call in sides.values():  # warm: model loads, SLIC import
                call()
            times: dict[str, list[float]] = {name: [] for name in sides}
            for _ in range(opts.rounds):
                for name, call in sides.items():
                    started = time.perf_counter()
                    call()
                    times[name].append(time.perf_counter() - started)
        finally:
            server.stop()
    medians = {name: round(statistics.median(values), 3) for name, values in times.items()}
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "evaluations": SETTINGS.samples + 2,
                "seconds": medians,
                "ms_per_evaluation": {k: round(1000 * v / (SETTINGS.samples + 2), 2) for k, v in medians.items()},
                "vs_in_process": {k: round(v / medians["in_process"], 2) for k, v in medians.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
