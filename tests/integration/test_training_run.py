"""Real native training runs on the bundled sample data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import torch

from dogbreed.images import open_rgb
from dogbreed.training.artifact import load_artifact
from dogbreed.training.metrics import parse_metrics
from dogbreed.training.transforms import eval_transform
from tests.conftest import FAST_ARGS, HPO_SCRIPT, REPO_ROOT, SAMPLE_DATA, TRAIN_SCRIPT, run_script

pytestmark = pytest.mark.integration

EPOCHS = 4  # the session's ResNet18 run (tests/conftest.py)


@pytest.fixture(scope="module")
def trained(training_runs):
    """The session's ResNet18 run, with the smdebug hook on (every other step: losses, weights, gradients)."""
    return training_runs["resnet18"]


def test_artifact_is_written_and_loads_without_code(trained):
    base, _, _ = trained
    assert not (base / "output" / "failure").exists()
    model, metadata = load_artifact(base / "model")
    assert metadata["architecture"] == "resnet18" and metadata["num_classes"] == 4
    assert metadata["labels"] == ["Crimson disc", "Emerald square", "Cobalt triangle", "Amber stripes"]
    assert metadata["input_size"] == 32 and len(metadata["mean"]) == 3
    assert metadata["hyperparameters"]["epochs"] == EPOCHS
    assert set(metadata["versions"]) >= {"torch", "torchvision", "python"}
    assert not model.training


def test_trained_model_classifies_held_out_images(trained):
    base, _, _ = trained
    model, metadata = load_artifact(base / "model")
    transform = eval_transform(metadata["input_size"], metadata["mean"], metadata["std"])
    files = sorted((SAMPLE_DATA / "test").rglob("*.jpg"))
    batch = torch.stack([transform(open_rgb(p)) for p in files])
    with torch.no_grad():
        predicted = model(batch).argmax(1).tolist()
    truth = [metadata["class_folders"].index(p.parent.name) for p in files]
    accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(files)
    assert accuracy >= 0.6, f"accuracy {accuracy:.2f}, chance is 0.25"


def test_a_finished_run_leaves_nothing_in_the_temporary_directory(trained):
    """The loader workers are stopped, not killed at exit: a killed worker leaves its pymp-* socket folder."""
    base, _, _ = trained
    assert sorted(p.name for p in (base / "tmp").iterdir()) == []


def test_onnx_variants_are_written_checked_and_chosen(trained):
    import numpy as np
    import onnxruntime

    base, _, _ = trained
    model, metadata = load_artifact(base / "model")
    onnx = metadata["onnx"]
    assert onnx["opset"] == 17 and onnx["parity"]["images"] > 0
    assert onnx["parity"]["max_abs_diff"] <= onnx["parity"]["atol"] + onnx["parity"]["rtol"] * 100
    assert set(onnx["variants"]) == {"fp32", "int8"} and onnx["serve"] in {"fp32", "int8"} and onnx["reason"]
    int8 = onnx["variants"]["int8"]
    fp32_accuracy = onnx["variants"]["fp32"]["test_accuracy"]
    expected = (
        "int8"
        if fp32_accuracy - int8["test_accuracy"] <= onnx["int8_gate"]["max_accuracy_drop"]
        and int8["agreement_with_fp32"] >= onnx["int8_gate"]["min_agreement"]
        else "fp32"
    )
    assert onnx["serve"] == expected
    metrics = json.loads((base / "output" / "data" / "metrics.json").read_text())
    assert metrics["serving_variant"]["variant"] == onnx["serve"]
    assert fp32_accuracy == metrics["test"]["accuracy"]  # the same weights as model.pth

    transform = eval_transform(metadata["input_size"], metadata["mean"], metadata["std"])
    batch = torch.stack([transform(open_rgb(p)) for p in sorted((SAMPLE_DATA / "test").rglob("*.jpg"))])
    session = onnxruntime.InferenceSession(
        str(base / "model" / onnx["variants"]["fp32"]["file"]), providers=["CPUExecutionProvider"]
    )
    got = session.run(["logits"], {"images": batch.numpy()})[0]  # the whole split as one dynamic batch
    with torch.no_grad():
        assert np.allclose(got, model(batch).numpy(), atol=1e-4, rtol=1e-3)
    assert (base / "model" / int8["file"]).stat().st_size < (base / "model" / "model.onnx").stat().st_size / 3


def test_metrics_json_and_plots(trained):
    base, _, _ = trained
    out = base / "output" / "data"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_completed"] == EPOCHS and [h["epoch"] for h in metrics["history"]] == list(
        range(1, EPOCHS + 1)
    )
    matrix = metrics["test"]["confusion_matrix"]
    assert len(matrix) == 4 and sum(map(sum, matrix)) == 40
    per_class = metrics["test"]["per_class"]
    assert [r["support"] for r in per_class] == [10, 10, 10, 10]
    assert metrics["test_accuracy"] == pytest.approx(sum(r["correct"] for r in per_class) / 40)
    assert metrics["test_accuracy"] >= 0.6
    for name in ("learning_curves.png", "confusion_matrix.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tuning_regexes_capture_the_real_log(trained):
    base, _, stdout = trained
    found = parse_metrics(stdout)
    metrics = json.loads((base / "output" / "data" / "metrics.json").read_text())
    assert len(found["train:loss"]) == EPOCHS
    # One value per epoch, then the kept model's: the objective a tuner reads last.
    assert len(found["validation:accuracy"]) == EPOCHS + 1
    assert found["validation:accuracy"][-1] == pytest.approx(metrics["val_accuracy"], abs=1e-4)
    assert found["validation:accuracy"][:-1] == pytest.approx([h["val_accuracy"] for h in metrics["history"]], abs=1e-4)
    assert found["test:accuracy"] == [pytest.approx(metrics["test_accuracy"], abs=1e-4)]
    assert found["test:loss"] == [pytest.approx(metrics["test_loss"], abs=1e-4)]


def test_smdebug_tensors_read_back(trained):
    from smdebug import modes
    from smdebug.trials import create_trial

    _, debug_dir, _ = trained
    trial = create_trial(str(debug_dir))
    losses = trial.tensor_names(collection="losses")
    assert losses
    loss = trial.tensor(losses[0])
    # 10 train batches per epoch, losses saved every step; evaluation saved under its own modes.
    train_steps = loss.steps(mode=modes.TRAIN)
    assert len(train_steps) == EPOCHS * 10
    assert all(float(loss.value(s, mode=modes.TRAIN)) > 0 for s in train_steps)
    assert loss.steps(mode=modes.EVAL) and loss.steps(mode=modes.PREDICT)
    weights = trial.tensor_names(collection="weights")
    gradients = trial.tensor_names(collection="gradients")
    assert any("fc.weight" in n for n in weights)
    assert any("fc.weight" in n for n in gradients)
    # Weights are saved every 2nd step as reductions: the L2 norm and the absolute mean and max.
    fc = trial.tensor(next(n for n in weights if "fc.weight" in n))
    assert len(fc.steps(mode=modes.TRAIN)) == EPOCHS * 10 // 2
    first = fc.steps()[0]
    assert 0 < fc.reduction_value(first, "mean", abs=True) <= fc.reduction_value(first, "max", abs=True)
    assert fc.reduction_value(first, "l2") > 0


def test_hpo_entry_point_runs_a_short_trial(tmp_path):
    result = run_script(
        HPO_SCRIPT,
        ["--data-dir", str(SAMPLE_DATA), *FAST_ARGS, "--model", "mobilenet_v2", "--learning-rate", "0.01"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = parse_metrics(result.stdout)
    assert 1 <= len(found["train:loss"]) <= 3  # hpo.py's budget: 3 epochs at most
    assert found["validation:accuracy"] and found["test:accuracy"]
    assert json.loads((tmp_path / "model" / "metadata.json").read_text())["architecture"] == "mobilenet_v2"


def test_amp_on_cpu_uses_bfloat16_only_when_a_timed_trial_finds_it_faster(tmp_path):
    result = run_script(
        TRAIN_SCRIPT,
        ["--data-dir", str(SAMPLE_DATA), *FAST_ARGS, "--epochs", "1", "--amp", "true", "--device", "cpu"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    match = re.search(
        r"--amp on CPU: a training step takes ([\d.]+) ms in bfloat16 and ([\d.]+) ms in float32 "
        r".*: using (\w+)",
        log,
    )
    assert match, log[-3000:]
    bfloat16_ms, float32_ms, chosen = float(match[1]), float(match[2]), match[3]
    assert chosen == ("bfloat16" if bfloat16_ms < float32_ms else "float32")


def test_make_export_onnx_adds_the_variants_to_an_older_artifact(trained, tmp_path):
    base, _, _ = trained
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(base / "model" / "model.pth", old)
    metadata = json.loads((base / "model" / "metadata.json").read_text())
    del metadata["onnx"]  # as train_model.py wrote artifacts before it made ONNX variants
    (old / "metadata.json").write_text(json.dumps(metadata))

    result = subprocess.run(
        ["make", "export-onnx", f"MODEL_DIR={old}"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    onnx = json.loads((old / "metadata.json").read_text())["onnx"]
    assert onnx["parity"]["inputs"] == "random" and onnx["serve"] == "fp32" and "--data-dir" in onnx["reason"]
    assert sorted(p.name for p in old.iterdir()) == ["metadata.json", "model.onnx", "model.pth"]

    result = subprocess.run(
        ["make", "export-onnx", f"MODEL_DIR={old}", f"EXPORT_DATA_DIR={SAMPLE_DATA}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    onnx = json.loads((old / "metadata.json").read_text())["onnx"]
    assert set(onnx["variants"]) == {"fp32", "int8"} and "inputs" not in onnx["parity"]
    assert "serving uses" in result.stdout
    load_artifact(old)  # still a valid artifact

    result = subprocess.run(
        ["make", "export-onnx", f"MODEL_DIR={tmp_path / 'nothing'}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0 and "metadata.json is missing" in result.stderr
