"""A TorchServe handler equivalent to this project's serving, for bench/serve_latency.py only.

The same decode, preprocessing and JSON answer as the project's server, with
torch eager on the artifact's weights: the setup TorchServe users ran before
it was archived. TorchServe calls :func:`handle` with ``data=None`` once
when the model loads, then once per batch of requests.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dogbreed.serving.inference import Options, decode_image, encode_response
from dogbreed.training.artifact import load_artifact
from dogbreed.training.transforms import eval_transform


class Handler:
    def __init__(self):
        self.model = None

    def initialize(self, context) -> None:
        torch.set_num_threads(int(os.environ.get("DOGBREED_INTRA_OP_THREADS", "1")))
        self.model, metadata = load_artifact(Path(context.system_properties["model_dir"]))
        self.labels = metadata["labels"]
        self.transform = eval_transform(metadata["input_size"], metadata["mean"], metadata["std"])

    @torch.inference_mode()
    def handle(self, data, context):
        answers = []
        for request in data:
            body = request.get("body") or request.get("data")
            image = self.transform(decode_image(bytes(body)))
            probabilities = torch.softmax(self.model(image[None]), 1).numpy()
            answers.append(encode_response(probabilities, self.labels, Options(), "resnet").decode())
        return answers


_service = Handler()


def handle(data, context):
    if _service.model is None:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
