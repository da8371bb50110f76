"""Inline explanations on the serving side: the request options, their bounds, and the explainer's memory."""

from __future__ import annotations

import base64
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dogbreed.artifact import read_metadata
from dogbreed.explain.explainer import PredictorClassifier, Settings, explain
from dogbreed.serving.cache import ModelCache
from dogbreed.serving.errors import InferenceError
from dogbreed.serving.explanations import EXPLAINER_KEY, check_evaluations, load_explainer, settings_for
from dogbreed.serving.inference import Options, Predictor, parse_body, parse_custom_attributes
from dogbreed.serving.memory import Budget, Ledger, MiB, Reading
from dogbreed.training.artifact import make_metadata, save_artifact
from tests.conftest import SAMPLE_DATA

JPEG = (SAMPLE_DATA / "test" / "002.Emerald_square" / "Emerald_square_00001.jpg").read_bytes()


def _refusal(fn, *args) -> InferenceError:
    with pytest.raises(InferenceError) as info:
        fn(*args)
    return info.value


def test_explanation_options_come_from_custom_attributes_and_json_bodies():
    options = parse_custom_attributes("top_k=2,explain=true,explain_samples=64,explain_segments=12")
    assert options == Options(top_k=2, explain=True, explain_samples=64, explain_segments=12)
    image = base64.b64encode((SAMPLE_DATA / "test" / "001.Crimson_disc" / "Crimson_disc_00003.jpg").read_bytes())
    body = json.dumps({"instances": [image.decode()], "explain": True, "explain_samples": 32.0}).encode()
    _, from_json = parse_body(body, "application/json", Options.parse({"explain_samples": "64", "top_k": "2"}))
    assert from_json.explain and from_json.explain_samples == 32 and from_json.top_k == 2  # the body's keys win
    for bad in ("explain=maybe", "explain_samples=0", "explain_segments=-3", "explain_samples=1e9x"):
        refusal = _refusal(parse_custom_attributes, bad)
        assert refusal.status == 400 and bad.split("=")[0] in refusal.message


def test_explanation_bounds_are_4xx_before_any_work(monkeypatch):
    assert settings_for(None, None) == Settings(samples=128)
    refusal = _refusal(settings_for, 64, 300)
    assert refusal.status == 400 and "explain_segments" in refusal.message
    check_evaluations(2, Settings(samples=510))  # 2 x 512 = 1024, the default bound
    refusal = _refusal(check_evaluations, 3, Settings(samples=510))
    assert refusal.status == 413 and refusal.code == "TooManyEvaluations" and "1536" in refusal.message
    monkeypatch.setenv("DOGBREED_EXPLAIN_MAX_EVALUATIONS", "100")
    assert _refusal(check_evaluations, 1, Settings(samples=99)).status == 413


def _ledger(models_mb: int) -> Ledger:
    return Ledger(Budget(models_mb * MiB, 100_000 * MiB, 0), lambda: Reading(100_000 * MiB, 0, "t"))


def test_the_explainer_is_charged_once_and_refused_507_where_it_does_not_fit():
    shared = ModelCache(_ledger(40), evict=False)
    refusal = _refusal(load_explainer, shared)
    assert refusal.status == 507 and "explanations" in refusal.message
    assert EXPLAINER_KEY not in shared.ledger.costs
    cache = ModelCache(_ledger(200))
    load_explainer(cache)
    load_explainer(cache)
    assert cache.ledger.costs[EXPLAINER_KEY] >= 48 * MiB and cache.keys() == []  # charged, and never evicted


class Constant(nn.Module):
    """A classifier that ignores its input: the same logits for every image."""

    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([0.5, 2.0, -1.0]))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1) + 0 * x.mean(dim=(1, 2, 3))[:, None]


def test_a_model_that_ignores_its_input_gets_values_near_zero_everywhere(tmp_path):
    from dogbreed.training.export import write_onnx_variants

    model = Constant().eval()
    metadata = make_metadata(
        architecture="mobilenet_v2",
        class_folders=["001.A", "002.B", "003.C"],
        input_size=32,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        metrics={},
        hyperparameters={},
    )
    metadata["onnx"] = write_onnx_variants(model, tmp_path, 32, parity_batches=[torch.randn(2, 3, 32, 32)])
    save_artifact(tmp_path, model.state_dict(), metadata)
    classifier = PredictorClassifier(Predictor(tmp_path, read_metadata(tmp_path)))
    explanation = explain(
        Image.open(SAMPLE_DATA / "test" / "003.Cobalt_triangle" / "Cobalt_triangle_00001.jpg"),
        classifier,
        Settings(samples=64),
    )
    assert np.abs(explanation.values).max() < 1e-6
    assert explanation.probabilities.argmax() == 1


def test_the_documented_option_defaults_are_the_ones_used():
    """The request options' reference is generated from Options' metadata; it states the explanation defaults."""
    documented = {f.name: f.metadata["default"] for f in dataclasses.fields(Options)}
    assert documented["explain_samples"] == str(settings_for(None, None).samples)
    assert documented["explain_segments"] == str(settings_for(None, None).segments)
    assert documented["top_k"] == str(Options().top_k)
