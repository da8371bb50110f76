"""ONNX variants of a trained model, checked before they are written beside model.pth.

- ``model.onnx``: the float32 graph exported from the same weights as
  ``model.pth``, opset :data:`ONNX_OPSET`, input ``images`` (N, 3, S, S)
  with a dynamic batch axis, output ``logits``. Before it is kept, ONNX
  Runtime's logits must match the torch model's on real images within
  :class:`Tolerance`, or the job fails.
- ``model.int8.onnx`` (unless turned off): static int8 quantization, QDQ
  format with per-channel weights, calibrated on a sample of training images
  through the evaluation transform. Both variants are evaluated on the test
  split; serving uses int8 only when its accuracy is within the allowed drop
  of float32's and the two agree on the top-1 class often enough.

What was measured and chosen goes into ``metadata.json`` under ``onnx``.
"""

from __future__ import annotations

import copy
import itertools
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dogbreed.errors import ArtifactError

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
ONNX_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
PARITY_BATCHES = 2


@dataclass(frozen=True)
class Tolerance:
    """ONNX Runtime's logits must satisfy |onnx - torch| <= atol + rtol * |torch| for every logit."""

    atol: float = 1e-4
    rtol: float = 1e-3


@dataclass(frozen=True)
class Int8Gate:
    """When serving may use int8: accuracy within ``max_accuracy_drop`` of float32's, and enough agreement."""

    max_accuracy_drop: float = 0.01
    min_agreement: float = 0.98

    @classmethod
    def from_args(cls, args) -> Int8Gate:
        """From the ``--int8-max-accuracy-drop`` (points) and ``--int8-min-agreement`` flags."""
        return cls(args.int8_max_accuracy_drop / 100, args.int8_min_agreement)


def parity_batches(loader: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[torch.Tensor]:
    """The images of the first :data:`PARITY_BATCHES` batches of a test loader: what the parity check runs on."""
    return (images for images, _ in itertools.islice(loader, PARITY_BATCHES))


def export_onnx(model: nn.Module, path: Path, image_size: int) -> None:
    """Write ``model`` (a CPU float32 copy, in eval mode) as ONNX with a dynamic batch axis."""
    cpu = copy.deepcopy(model).float().cpu().eval()
    example = torch.zeros(1, 3, image_size, image_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            cpu,
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )


def session(path: Path, threads: int | None = None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def logits(onnx_session, images: torch.Tensor) -> np.ndarray:
    return onnx_session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy().astype(np.float32)})[0]


def check_parity(
    model: nn.Module, onnx_path: Path, batches: Iterable[torch.Tensor], tolerance: Tolerance
) -> dict[str, Any]:
    """Compare ONNX Runtime with torch on ``batches``; raises :class:`ArtifactError` past ``tolerance``."""
    cpu = copy.deepcopy(model).float().cpu().eval()
    onnx_session = session(onnx_path)
    worst, excess, count = 0.0, -np.inf, 0
    with torch.no_grad():
        for images in batches:
            expected = cpu(images).numpy()
            got = logits(onnx_session, images)
            difference = np.abs(got - expected)
            worst = max(worst, float(difference.max()))
            excess = max(excess, float((difference - tolerance.atol - tolerance.rtol * np.abs(expected)).max()))
            count += len(images)
    if count == 0:
        raise ArtifactError("no images to check the ONNX export against")
    if excess > 0:
        raise ArtifactError(
            f"the ONNX export does not match the torch model: logits differ by up to {worst:.3g} "
            f"on {count} test images (tolerance: atol {tolerance.atol}, rtol {tolerance.rtol})"
        )
    return {"images": count, "max_abs_diff": worst, **asdict(tolerance)}


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over batches of images."""

    def __init__(self, batches: Iterable[torch.Tensor]):
        self._batches: Iterator[torch.Tensor] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        images = next(self._batches, None)
        return None if images is None else {INPUT_NAME: images.numpy().astype(np.float32)}


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: Iterable[torch.Tensor]) -> None:
    """Static int8 quantization of ``fp32_path``, calibrated on ``calibration``.

    QDQ format, uint8 activations and per-channel int8 weights (U8S8): ONNX Runtime's x86 kernels are built for
    that pairing (VPMADDUBSW/VNNI), and ran ResNet18 about 2.5x faster than int8 activations on an AVX-512 machine.
    Weights keep 7 bits (``reduce_range``) so the 16-bit intermediate sums of CPUs without VNNI cannot saturate:
    the graph the int8 gate evaluated answers the same on any x86 serving instance.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(int8_path),
            _Calibration(calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
        )


def predictions(onnx_session, loader: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 classes and true labels over ``loader``."""
    predicted, targets = [], []
    for images, labels in loader:
        predicted.append(logits(onnx_session, images).argmax(1))
        targets.append(labels.numpy())
    return np.concatenate(predicted), np.concatenate(targets)


def choose_variant(fp32_accuracy: float, int8_accuracy: float, agreement: float, gate: Int8Gate) -> tuple[str, str]:
    """The variant serving should use, and why, in words."""
    drop = fp32_accuracy - int8_accuracy
    if drop > gate.max_accuracy_drop:
        return "fp32", (
            f"int8 loses {drop * 100:.1f} points of test accuracy ({int8_accuracy:.4f} against "
            f"{fp32_accuracy:.4f}); at most {gate.max_accuracy_drop * 100:.1f} are allowed"
        )
    if agreement < gate.min_agreement:
        return "fp32", (
            f"int8 and fp32 agree on the top-1 class for {agreement * 100:.1f}% of test images; "
            f"at least {gate.min_agreement * 100:.1f}% is required"
        )
    return "int8", (
        f"int8 keeps test accuracy within {gate.max_accuracy_drop * 100:.1f} points "
        f"({int8_accuracy:.4f} against {fp32_accuracy:.4f}) and agrees with fp32 on "
        f"{agreement * 100:.1f}% of test images"
    )


def write_onnx_variants(
    model: nn.Module,
    model_dir: Path,
    image_size: int,
    *,
    parity_batches: Iterable[torch.Tensor],
    test_loader=None,
    calibration_batches: Iterable[torch.Tensor] | None = None,
    tolerance: Tolerance = Tolerance(),
    gate: Int8Gate = Int8Gate(),
) -> dict[str, Any]:
    """Export, check and evaluate the ONNX variants into ``model_dir``; returns metadata's ``onnx`` section.

    int8 is made only with both ``calibration_batches`` and a ``test_loader`` to judge it on. Nothing is left
    in ``model_dir`` when the parity check fails.
    """
    fp32_path = model_dir / ONNX_FILE
    export_onnx(model, fp32_path, image_size)
    try:
        parity = check_parity(model, fp32_path, parity_batches, tolerance)
    except ArtifactError:
        fp32_path.unlink(missing_ok=True)
        raise
    log.info(
        "ONNX fp32 export matches torch: logits differ by at most %.2g on %d images",
        parity["max_abs_diff"],
        parity["images"],
    )
    variants: dict[str, Any] = {"fp32": {"file": ONNX_FILE}}
    section: dict[str, Any] = {
        "opset": ONNX_OPSET,
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "parity": parity,
        "variants": variants,
        "serve": "fp32",
        "reason": "int8 was not made (--int8 false)",
    }
    if test_loader is None:
        return section
    fp32_predicted, targets = predictions(session(fp32_path), test_loader)
    fp32_accuracy = variants["fp32"]["test_accuracy"] = float((fp32_predicted == targets).mean())
    if calibration_batches is None:
        return section
    int8_path = model_dir / INT8_FILE
    quantize_int8(fp32_path, int8_path, calibration_batches)
    int8_predicted, _ = predictions(session(int8_path), test_loader)
    int8_accuracy = float((int8_predicted == targets).mean())
    agreement = float((int8_predicted == fp32_predicted).mean())
    variants["int8"] = {"file": INT8_FILE, "test_accuracy": int8_accuracy, "agreement_with_fp32": agreement}
    section["serve"], section["reason"] = choose_variant(fp32_accuracy, int8_accuracy, agreement, gate)
    section["int8_gate"] = asdict(gate)
    log.info(
        "ONNX test accuracy: fp32 %.4f, int8 %.4f; top-1 agreement %.4f; serving uses %s: %s",
        fp32_accuracy,
        int8_accuracy,
        agreement,
        section["serve"],
        section["reason"],
    )
    return section
