"""Explanations of the sample models: where they point, that they add up, and that every place a model runs gives
the same ones, inline from a real MMS server and through the SageMaker SDK's local-mode client."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dogbreed.artifact import read_metadata
from dogbreed.explain.explainer import PredictorClassifier, Settings, explain
from dogbreed.explain.remote import EndpointClassifier
from dogbreed.explain.superpixels import mask_view
from dogbreed.serving.inference import Predictor
from dogbreed.workflows.sdk import local_runtime
from tests.conftest import REPO_ROOT, SAMPLE_DATA
from tests.serving import load_model, running_server

TARGET = "dog-breed-classifier/model.tar.gz"
SQUARE = SAMPLE_DATA / "test" / "002.Emerald_square" / "Emerald_square_00004.jpg"


@pytest.fixture(scope="module")
def masks(tmp_path_factory) -> Path:
    """The sample generator's shape masks for the committed sample (the same seed draws the same images)."""
    out = tmp_path_factory.mktemp("masks")
    subprocess.run(
        [
            sys.executable,
            str(SAMPLE_DATA.parent / "make_sample.py"),
            "--out",
            str(out / "sample"),
            "--masks",
            str(out / "masks"),
        ],
        check=True,
        capture_output=True,
    )
    return out / "masks"


@pytest.fixture(scope="module")
def resnet(trained_models) -> PredictorClassifier:
    folder = trained_models["resnet18"]
    return PredictorClassifier(Predictor(folder, read_metadata(folder)))


def test_the_true_class_is_explained_by_its_shape_and_the_values_add_up(resnet, masks):
    """The pointing game: the segment that most raises the true class's probability lies mostly on the shape."""
    hits, images = 0, sorted((SAMPLE_DATA / "test").glob("*/*.jpg"))
    for path in images:
        true_class = int(path.parent.name[:3]) - 1
        explanation = explain(Image.open(path), resnet, Settings())
        assert explanation.efficiency_gap() < 1e-6, path.name  # values sum to f(x) - f(baseline)
        mask = mask_view(Image.open(masks / "test" / path.parent.name / f"{path.stem}.png"))
        best = int(np.argmax(explanation.values[:, true_class]))
        hits += mask[explanation.segments == best].mean() > 0.5
    assert hits >= 0.9 * len(images), f"pointing game {hits}/{len(images)}"


@pytest.fixture(scope="module")
def routing(model_store, tmp_path_factory):
    with running_server(model_store, tmp_path_factory.mktemp("explain-serve")) as server:
        yield server


def _inline(server, attributes: str, target: str = TARGET, body: bytes | None = None):
    return server.invoke(
        body or SQUARE.read_bytes(), target, "image/jpeg", **{"X-Amzn-SageMaker-Custom-Attributes": attributes}
    )


def test_inline_explanations_come_with_the_predictions_and_add_up(routing, resnet):
    status, answer = _inline(routing, "explain=true,explain_samples=64,top_k=2")
    assert status == 200, answer
    result = answer["results"][0]
    explanation = result["explanation"]
    assert explanation["label"] == result["predictions"][0]["label"]
    assert explanation["evaluations"] == 66 and explanation["complete"]
    values = explanation["segment_values"]
    assert len(values) == explanation["segments"] >= 10
    gap = sum(values) - (explanation["probability"] - explanation["baseline_probability"])
    assert abs(gap) < 1e-4
    heat = Image.open(io.BytesIO(base64.b64decode(explanation["heatmap_png"])))
    segments = np.asarray(Image.open(io.BytesIO(base64.b64decode(explanation["segments_png"]))))
    assert heat.size == tuple(explanation["size"]) == segments.shape[::-1] and segments.max() == len(values) - 1
    # The same explanation in-process: the server's values are the artifact's own.
    local = explain(Image.open(SQUARE), resnet, Settings(samples=64))
    assert np.abs(np.array(values) - local.values[:, explanation["class_index"]]).max() < 1e-5
    # No explanation unless asked.
    assert "explanation" not in routing.invoke(SQUARE.read_bytes(), TARGET, "image/jpeg")[1]["results"][0]


@pytest.mark.parametrize(
    ("attributes", "status", "words"),
    [
        ("explain=perhaps", 400, "explain must be true or false"),
        ("explain=true,explain_samples=0", 400, "explain_samples"),
        ("explain=true,explain_segments=1", 400, "explain_segments"),
        ("explain=true,explain_samples=5000", 413, "model evaluations"),
    ],
)
def test_bad_explanation_options_are_4xx_json_and_the_server_stays_healthy(routing, attributes, status, words):
    got, answer = _inline(routing, attributes)
    assert got == status and words in answer["message"], answer
    assert routing.healthy()


def test_a_batch_over_the_evaluation_bound_is_413_before_any_work(routing):
    image = base64.b64encode(SQUARE.read_bytes()).decode()
    body = json.dumps({"instances": [image] * 5, "explain": True, "explain_samples": 256}).encode()
    status, answer = routing.invoke(body, TARGET, "application/json")
    assert status == 413 and answer["type"] == "TooManyEvaluations"


def test_the_time_limit_cuts_an_explanation_short_and_says_so(model_store, tmp_path):
    with running_server(model_store, tmp_path, DOGBREED_EXPLAIN_TIME_LIMIT_MS="1") as server:
        status, answer = _inline(server, "explain=true,explain_samples=512")
    explanation = answer["results"][0]["explanation"]
    assert status == 200 and not explanation["complete"] and explanation["evaluations"] < 514


def test_the_local_mode_client_explains_as_the_artifact_does(routing, resnet):
    """The SageMaker SDK's local-mode client sends the perturbed views as JSON batches: same values as in-process."""
    remote = EndpointClassifier(local_runtime(routing.port), "local", TARGET, "the local server")
    through_server = explain(Image.open(SQUARE), remote, Settings(samples=96))
    in_process = explain(Image.open(SQUARE), resnet, Settings(samples=96))
    assert remote.labels == resnet.labels
    assert np.abs(through_server.values - in_process.values).max() < 1e-5


def test_multi_model_endpoints_explain_inline(trained_models, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(trained_models["mobilenet_v2"], root / "mobile" / "model")
    with running_server(root, tmp_path, SAGEMAKER_MULTI_MODEL="true") as server:
        assert load_model(server, "mobile", root / "mobile" / "model")[0] == 200
        status, answer = server.json(
            "POST",
            "/models/mobile/invoke",
            SQUARE.read_bytes(),
            {"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Custom-Attributes": "explain=true,explain_samples=32"},
        )
    assert status == 200, answer
    assert answer["results"][0]["explanation"]["evaluations"] == 34


def test_make_explains_cli_writes_the_report_against_the_local_server(routing, tmp_path, trained_models):
    out = tmp_path / "report"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dogbreed",
            "explain",
            str(SQUARE),
            "--local-port",
            str(routing.port),
            "--target",
            TARGET,
            "--samples",
            "64",
            "--out",
            str(out),
            "--explain-top-k",
            "2",
            "--score",
            str(SAMPLE_DATA / "test"),
            "--metrics",
            str(trained_models["resnet18"].parent / "output" / "data" / "metrics.json"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((out / "explanations.json").read_text())
    assert len(data["images"][0]["explanations"]) == 2
    assert data["predictions"]["accuracy"] > 0.8 and len(data["class_balance"]) == 4
    assert (out / "explain-report.html").read_text().count("data:image/png;base64,") == 4
    bad = subprocess.run(
        [sys.executable, "-m", "dogbreed", "explain", str(tmp_path / "missing.jpg"), "--artifact", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "does not exist" in bad.stderr
