"""Decode / predict / encode, without a server."""

from __future__ import annotations

import base64
import io
import json
import sys

import pytest
import torch
from PIL import Image

from dogbreed.serving.errors import InferenceError
from dogbreed.serving.inference import (
    Options,
    Predictor,
    check_accept,
    decode_image,
    encode_response,
    parse_body,
    parse_custom_attributes,
)
from dogbreed.training.artifact import make_metadata, save_artifact
from dogbreed.training.models import build_model
from tests.conftest import SAMPLE_DATA

JPEG = (SAMPLE_DATA / "test" / "001.Crimson_disc" / "Crimson_disc_00003.jpg").read_bytes()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _status(fn, *args):
    with pytest.raises(InferenceError) as info:
        fn(*args)
    return info.value.status, info.value.message


def test_raw_image_types_are_one_image():
    for content_type, body in (("application/x-image", JPEG), ("image/jpeg", JPEG), ("image/png", _png())):
        assert body_images(body, content_type) == [body]


def body_images(body, content_type, pixel_budget=None) -> list[bytes]:
    """The encoded images parse_body finds in a body, checked from their headers."""
    return list(parse_body(body, content_type, pixel_budget=pixel_budget)[0])


def test_json_batch_and_its_options():
    body = json.dumps(
        {
            "instances": [base64.b64encode(JPEG).decode(), base64.b64encode(_png()).decode()],
            "top_k": 2,
            "probabilities": True,
        }
    ).encode()
    images, options = parse_body(body, "application/json; charset=utf-8")
    assert len(images) == 2
    assert options == Options(top_k=2, probabilities=True)
    assert len(body_images(json.dumps([base64.b64encode(JPEG).decode()]).encode(), "application/json")) == 1


@pytest.mark.parametrize(
    "body, content_type, status, fragment",
    [
        (b"", "application/x-image", 400, "empty request body"),
        (b"hello, not an image", "image/jpeg", 400, "not an image"),
        (b"{not json", "application/json", 400, "invalid JSON"),
        (b'["@@@not base64@@@"]', "application/json", 400, "instance 0 is not valid base64"),
        (b"[]", "application/json", 400, "non-empty list"),
        (b'{"instances": [1]}', "application/json", 400, "not a base64 string"),
        (JPEG, "text/plain", 415, "content type 'text/plain' is not supported"),
        (JPEG, None, 415, "not supported"),
    ],
)
def test_bad_input_gets_a_client_error(body, content_type, status, fragment):
    got_status, message = _status(body_images, body, content_type)
    assert got_status == status and fragment in message


def test_a_truncated_image_passes_the_header_check_and_fails_its_decode():
    truncated = JPEG[: len(JPEG) // 2]
    assert body_images(truncated, "image/jpeg") == [truncated]
    status, message = _status(decode_image, truncated)
    assert status == 400 and "truncated" in message


def test_huge_image_is_refused_before_decoding(monkeypatch):
    import dogbreed.images

    monkeypatch.setattr(dogbreed.images, "MAX_PIXELS", 1000)
    status, message = _status(body_images, _png(), "image/png")
    assert status == 413 and "too large (40x30 pixels)" in message


def _one_bit_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_a_batch_past_the_pixel_budget_is_413_before_any_image_is_decoded(monkeypatch):
    import dogbreed.images

    bomb = base64.b64encode(_one_bit_png(3000)).decode()  # 9 Mpx, a few kB
    decoded = []
    monkeypatch.setattr(dogbreed.images.Image.Image, "load", lambda self: decoded.append(self.size))
    body = json.dumps({"instances": [bomb] * 4}).encode()
    status, message = _status(body_images, body, "application/json", 20_000_000)
    assert status == 413 and "over 20000000 pixels" in message
    assert decoded == []
    assert len(body_images(body, "application/json", 40_000_000)) == 4
    monkeypatch.setenv("DOGBREED_MAX_REQUEST_PIXELS", "10000000")
    assert _status(body_images, body, "application/json")[0] == 413


def test_an_image_that_would_decode_past_the_worker_bound_is_413_before_decoding(monkeypatch):
    def encoded(kind, side):
        buffer = io.BytesIO()
        Image.new("RGB", (side, side), (200, 30, 30)).save(buffer, kind)
        return buffer.getvalue()

    monkeypatch.setenv("DOGBREED_MAX_DECODED_PIXELS", str(1000 * 1000))
    png = encoded("PNG", 1200)  # a few kilobytes that decode to 1.44 million pixels
    status, message = _status(decode_image, png, 256)
    assert status == 413 and "at most 1000000 pixels" in message and "JPEG" in message
    assert decode_image(encoded("PNG", 900), 256).size == (900, 900)
    # A JPEG of the same size decodes scaled down (1/4 here, keeping 256 pixels a side), so it passes.
    assert decode_image(encoded("JPEG", 1200), 256).size == (300, 300)


def test_images_are_decoded_one_at_a_time(tmp_path, monkeypatch):
    from dogbreed.serving import inference

    _artifact(tmp_path)
    predictor = _predictor(tmp_path)
    alive = []
    real = inference.open_rgb

    def tracked(data, draft_size=None, max_decoded_pixels=None):
        image = real(data, draft_size=draft_size, max_decoded_pixels=max_decoded_pixels)
        alive.append(image)
        assert sum(1 for i in alive if sys.getrefcount(i) > 3) <= 1, "an earlier decoded image is still held"
        return image

    monkeypatch.setattr(inference, "open_rgb", tracked)
    assert predictor.probabilities([JPEG, _png(), JPEG]).shape == (3, 3)


@pytest.mark.parametrize(
    "top_k", ["Infinity", "-Infinity", "NaN", "1e400", "true", "2.5", "0", "-3", '"3x"', "[1]", "{}", "null"]
)
def test_top_k_that_is_not_a_positive_integer_is_400(top_k):
    body = f'{{"instances": ["{base64.b64encode(JPEG).decode()}"], "top_k": {top_k}}}'.encode()
    assert _status(body_images, body, "application/json")[0] == 400


def test_top_k_as_whole_number_or_digits():
    for top_k, expected in (("3.0", 3), ('"4"', 4), ("10000000000000000000000", 10**22)):
        _, options = parse_body(
            f'{{"instances": ["{base64.b64encode(JPEG).decode()}"], "top_k": {top_k}}}'.encode(), "application/json"
        )
        assert options.top_k == expected


def test_deeply_nested_json_is_400():
    for body in (b"[" * 100_000, b'{"instances": ' + b"[" * 100_000):
        status, message = _status(body_images, body, "application/json")
        assert status == 400 and "invalid JSON" in message


def test_accept_and_custom_attributes():
    check_accept(None)
    check_accept("application/json")
    check_accept("text/html, */*;q=0.1")
    assert _status(check_accept, "text/csv")[0] == 406
    assert parse_custom_attributes("top_k=3, probabilities=true") == Options(top_k=3, probabilities=True)
    assert parse_custom_attributes("trace=abc;top_k=1") == Options(top_k=1)
    assert _status(parse_custom_attributes, "top_k=zero")[0] == 400


def _artifact(folder, classes=("001.Affenpinscher", "002.Afghan_hound", "003.Basenji"), onnx=True):
    """A random-init MobileNetV2 artifact, with model.onnx as training writes it (unless ``onnx`` is off)."""
    from dogbreed.training.export import write_onnx_variants

    model = build_model("mobilenet_v2", len(classes)).eval()
    metadata = make_metadata(
        architecture="mobilenet_v2",
        class_folders=list(classes),
        input_size=32,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        metrics={},
        hyperparameters={},
    )
    if onnx:
        metadata["onnx"] = write_onnx_variants(model, folder, 32, parity_batches=[torch.randn(4, 3, 32, 32)])
    save_artifact(folder, model.state_dict(), metadata)
    return model


def _predictor(folder) -> Predictor:
    from dogbreed.artifact import read_metadata

    return Predictor(folder, read_metadata(folder))


def test_predict_and_encode_top_k_and_probabilities(tmp_path):
    from dogbreed.training.transforms import eval_transform

    model = _artifact(tmp_path)
    predictor = _predictor(tmp_path)
    probs = predictor.probabilities(body_images(JPEG, "image/jpeg") * 2)
    assert probs.shape == (2, 3) and abs(probs.sum(1) - 1).max() < 1e-9
    with torch.no_grad():  # ONNX Runtime answers as the torch model does
        expected = torch.softmax(model(eval_transform(32, [0.5] * 3, [0.5] * 3)(decode_image(JPEG))[None]), 1)
    assert abs(probs[0] - expected[0].numpy()).max() < 1e-5
    answer = json.loads(
        encode_response(probs, predictor.labels, Options(top_k=2, probabilities=True), "m", predictor.variant)
    )
    assert answer["variant"] == predictor.variant == "fp32"
    first = answer["results"][0]
    assert [p["probability"] for p in first["predictions"]] == sorted(
        (p["probability"] for p in first["predictions"]), reverse=True
    )
    assert len(first["predictions"]) == 2 and len(first["probabilities"]) == 3
    assert answer["labels"] == ["Affenpinscher", "Afghan hound", "Basenji"]
    top = first["predictions"][0]
    assert answer["labels"][top["class_index"]] == top["label"]
    # k larger than the class count gives every class; no probabilities unless asked.
    plain = json.loads(encode_response(probs, predictor.labels, Options(top_k=10), None))
    assert len(plain["results"][0]["predictions"]) == 3 and "probabilities" not in plain["results"][0]


def test_an_artifact_without_onnx_names_the_conversion_command(tmp_path):
    from dogbreed.errors import ArtifactError

    _artifact(tmp_path, onnx=False)
    with pytest.raises(ArtifactError, match="make export-onnx"):
        _predictor(tmp_path)


def test_the_variant_training_chose_is_served(tmp_path):
    import shutil

    _artifact(tmp_path)
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    shutil.copy(tmp_path / "model.onnx", tmp_path / "model.int8.onnx")  # any graph will do for the choice
    metadata["onnx"]["variants"]["int8"] = {"file": "model.int8.onnx"}
    metadata["onnx"]["serve"] = "int8"
    (tmp_path / "metadata.json").write_text(json.dumps(metadata))
    assert _predictor(tmp_path).variant == "int8"
    (tmp_path / "model.int8.onnx").write_bytes(b"not a graph")
    from dogbreed.errors import ArtifactError

    with pytest.raises(ArtifactError, match="not a loadable ONNX graph"):
        _predictor(tmp_path)
