"""ONNX export, the parity check that guards it, and the int8 gate."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dogbreed.errors import ArtifactError
from dogbreed.training import export
from dogbreed.training.export import Int8Gate, Tolerance, check_parity, choose_variant, write_onnx_variants
from dogbreed.training.models import build_model

SIZE = 32


def _model():
    torch.manual_seed(0)
    return build_model("mobilenet_v2", 4).eval()


def _loader(n=24):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, SIZE, SIZE, generator=generator)
    return DataLoader(TensorDataset(images, torch.randint(0, 4, (n,), generator=generator)), batch_size=8)


def test_a_broken_export_fails_the_parity_check(tmp_path):
    model = _model()
    export.export_onnx(model, tmp_path / "model.onnx", SIZE)
    batches = [images for images, _ in _loader()]
    assert check_parity(model, tmp_path / "model.onnx", batches, Tolerance())["max_abs_diff"] < 1e-4
    drifted = copy.deepcopy(model)
    with torch.no_grad():
        drifted.classifier[-1].bias += 0.01  # the graph no longer holds these weights
    with pytest.raises(ArtifactError, match="does not match the torch model"):
        check_parity(drifted, tmp_path / "model.onnx", batches, Tolerance())


def test_nothing_is_written_when_the_export_is_broken(tmp_path, monkeypatch):
    real = export.export_onnx
    other = build_model("mobilenet_v2", 4).eval()  # other random weights
    monkeypatch.setattr(export, "export_onnx", lambda model, path, size: real(other, path, size))
    with pytest.raises(ArtifactError, match="logits differ by up to"):
        write_onnx_variants(
            _model(),
            tmp_path,
            SIZE,
            parity_batches=[images for images, _ in _loader()],
            test_loader=_loader(),
            calibration_batches=None,
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "fp32, int8, agreement, gate, variant, fragment",
    [
        (0.90, 0.895, 0.99, Int8Gate(), "int8", "keeps test accuracy within 1.0 points"),
        (0.90, 0.88, 0.99, Int8Gate(), "fp32", "loses 2.0 points"),
        (0.90, 0.90, 0.95, Int8Gate(), "fp32", "agree on the top-1 class for 95.0%"),
        (0.90, 0.899, 1.00, Int8Gate(max_accuracy_drop=0.0), "fp32", "at most 0.0 are allowed"),
    ],
)
def test_the_int8_gate(fp32, int8, agreement, gate, variant, fragment):
    chosen, reason = choose_variant(fp32, int8, agreement, gate)
    assert chosen == variant and fragment in reason


def test_both_variants_are_written_evaluated_and_gated(tmp_path):
    model = _model()
    calibration = [images for images, _ in _loader(16)]
    tight = Int8Gate(max_accuracy_drop=0.0, min_agreement=1.0)
    section = write_onnx_variants(
        model,
        tmp_path,
        SIZE,
        parity_batches=calibration,
        test_loader=_loader(),
        calibration_batches=calibration,
        gate=tight,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx", "model.onnx"]
    int8, fp32 = section["variants"]["int8"], section["variants"]["fp32"]
    assert (
        section["serve"]
        == choose_variant(fp32["test_accuracy"], int8["test_accuracy"], int8["agreement_with_fp32"], tight)[0]
    )
    assert section["int8_gate"] == {"max_accuracy_drop": 0.0, "min_agreement": 1.0}
    with torch.no_grad():
        expected = torch.cat([model(images).argmax(1) for images, _ in _loader()])
    got, _ = export.predictions(export.session(tmp_path / "model.onnx"), _loader())
    assert (torch.from_numpy(got) == expected).all()
