"""The black box behind an endpoint, for explanations: ``invoke_endpoint`` with a TargetModel.

The same code reaches a SageMaker endpoint (boto3's runtime client) and the
``make local-serve`` container (the SageMaker SDK's local-mode client).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from dogbreed.explain import superpixels
from dogbreed.workflows.aws import CloudError
from dogbreed.workflows.cloud.prediction import invoke

# invoke_endpoint takes at most 6 MB; a batch's base64 PNGs stay under this.
MAX_BATCH_BYTES = 5 * 1024 * 1024
MAX_BATCH_IMAGES = 64


class EndpointClassifier:
    """The views go as JSON batches of base64 PNGs (lossless, so the model sees the pixels an in-process
    explanation would), at most 64 images and 5 MB a request."""

    def __init__(self, runtime: Any, endpoint: str, target: str | None, where: str):
        self.runtime = runtime
        self.endpoint = endpoint
        self.target = target
        self.where = where
        self.labels: list[str] = []
        self.batch = 32

    def __call__(self, views: list[np.ndarray]) -> np.ndarray:
        return self._probabilities([superpixels.png_base64(view) for view in views])

    def probabilities_of_files(self, images: list[bytes]) -> np.ndarray:
        """Encoded images, as they are."""
        return self._probabilities([base64.b64encode(image).decode("ascii") for image in images])

    def _probabilities(self, encoded: list[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for batch in batches(encoded):
            rows.extend(self._invoke(batch))
        return np.asarray(rows, dtype=np.float64)

    def _invoke(self, instances: list[str]) -> list[list[float]]:
        request: dict[str, Any] = {
            "EndpointName": self.endpoint,
            "ContentType": "application/json",
            "Accept": "application/json",
            "Body": json.dumps({"instances": instances, "probabilities": True, "top_k": 1}).encode(),
        }
        if self.target:
            request["TargetModel"] = self.target
        answer = invoke(self.runtime, self.where, **request)
        if any("probabilities" not in result for result in answer.get("results", [])):
            raise CloudError(f"{self.where} sent no probabilities; is it this project's serving image?")
        if not self.labels:
            self.labels = list(answer.get("labels") or [])
        return [result["probabilities"] for result in answer["results"]]


def batches(encoded: Sequence[str]) -> list[list[str]]:
    """``encoded`` in request-sized groups: at most MAX_BATCH_IMAGES and about MAX_BATCH_BYTES each."""
    groups: list[list[str]] = [[]]
    size = 0
    for item in encoded:
        if groups[-1] and (len(groups[-1]) >= MAX_BATCH_IMAGES or size + len(item) > MAX_BATCH_BYTES):
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += len(item) + 4
    return groups if groups[0] else []
