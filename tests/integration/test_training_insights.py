"""The smdebug hook on by default, the rules run at the end of training, and the report: real runs, read back."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import REPO_ROOT, SAMPLE_DATA, TRAIN_SCRIPT, run_script

pytestmark = pytest.mark.integration

BASE_ARGS = [
    "--data-dir",
    str(SAMPLE_DATA),
    "--pretrained",
    "false",
    "--image-size",
    "32",
    "--batch-size",
    "16",
    "--workers",
    "1",
    "--log-interval",
    "50",
    "--int8",
    "false",
    "--patience",
    "0",
]
# A random-init backbone kept frozen, a linear head learning at 0.01: the loss falls steadily and the
# validation loss follows it. Nothing for the rules to find.
HEALTHY = [*BASE_ARGS, "--freeze-backbone", "true", "--learning-rate", "0.01", "--epochs", "5"]
RULES = {
    "LossNotDecreasing",
    "Overfit",
    "Overtraining",
    "VanishingGradient",
    "ExplodingTensor",
    "PoorWeightInitialization",
    "DeadRelu",
    "ClassImbalance",
}


def train(base, args):
    result = run_script(TRAIN_SCRIPT, args, base)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    rules = json.loads((base / "output" / "data" / "rules.json").read_text())
    return result, {r["rule"]: r for r in rules["rules"]}, rules


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    base = tmp_path_factory.mktemp("healthy")
    result, rules, payload = train(base, HEALTHY)
    return base, result, rules, payload


def test_a_healthy_run_trips_no_rule_and_every_rule_looked(healthy):
    _base, _, rules, payload = healthy
    assert set(rules) == RULES
    assert payload["triggered"] == []
    for name, rule in rules.items():
        assert rule["triggered"] is False and rule["step"] is None, name
        assert rule["evaluated_steps"] > 0, f"{name} had nothing to evaluate"
        assert rule["error"] is None
    assert rules["LossNotDecreasing"]["parameters"]["num_steps"] == 10
    assert rules["VanishingGradient"]["parameters"] == {"threshold": 1e-7}
    assert rules["DeadRelu"]["parameters"] == {
        "tensor_regex": ".*relu_output",
        "threshold_inactivity": 1.0,
        "threshold_layer": 50.0,
    }


def test_every_relu_site_and_the_labels_are_saved_for_the_rules(healthy):
    from smdebug import modes
    from smdebug.trials import create_trial

    base, _, _, _ = healthy
    trial = create_trial(str(base / "output" / "data" / "tensors"))
    # ResNet18 calls its stem ReLU once and each of its 8 blocks' ReLU twice: 17 sites.
    sites = trial.tensor_names(regex=".*relu_output")
    assert len(sites) == 17 and "layer4.1.relu#2/relu_output" in sites
    assert len(trial.tensor_names(regex=".*relu_input")) == 17
    activity = trial.tensor(sites[0]).value(0)
    assert activity.shape == (64,) and 0 < activity.mean() < 1  # one share per channel
    assert trial.tensor_names(regex=".*gradient_percentiles") == ["fc/gradient_percentiles"]  # frozen backbone
    labels = trial.tensor("labels")
    assert len(labels.steps(mode=modes.TRAIN)) == 50 and labels.steps(mode=modes.EVAL)


def test_the_hook_is_on_by_default_and_writes_to_the_output_data_folder(healthy):
    from smdebug import modes
    from smdebug.trials import create_trial

    base, result, _, _ = healthy
    tensors = base / "output" / "data" / "tensors"
    assert f"to {tensors}" in result.stdout
    trial = create_trial(str(tensors))
    assert trial.tensor_names(collection="losses")
    gradients = trial.tensor_names(collection="gradients")
    assert gradients and trial.tensor_names(collection="weights")
    loss = trial.tensor(trial.tensor_names(collection="losses")[0])
    assert len(loss.steps(mode=modes.TRAIN)) == 50  # every step: 160 images / 16, 5 epochs
    assert loss.steps(mode=modes.EVAL)
    # Weights and gradients are saved as reductions every 10 steps, not as whole tensors.
    saved = trial.tensor(gradients[-1]).steps()
    assert len(saved) == 5 and trial.tensor(gradients[-1]).reduction_value(saved[0], "l2") > 0


def test_the_report_holds_the_verdicts_and_the_pictures(healthy):
    base, _, _, _ = healthy
    page = (base / "output" / "data" / "debugger-report.html").read_text()
    assert "None of the 8 rules fired." in page
    assert page.index("<h2>Rules</h2>") < page.index("<h2>Loss by mode</h2>")
    for section in (
        "Loss by mode",
        "Gradients",
        "Weight updates",
        "Learning curves",
        "Confusion matrix (test)",
        "Profile",
    ):
        assert f"<h2>{section}</h2>" in page
    assert page.count('src="data:image/png;base64,') >= 6
    assert "50 steps on cpu:" in page and "waiting for data" in page
    assert "<script" not in page and "http" not in page  # self-contained


def test_weight_update_ratios_are_measured_around_the_optimizer_step(healthy):
    base, _, _, _ = healthy
    updates = json.loads((base / "output" / "data" / "weight_updates.json").read_text())
    assert updates["interval"] == 10 and [row["step"] for row in updates["steps"]] == [0, 10, 20, 30, 40]
    for row in updates["steps"]:
        assert set(row["layers"]) == {"fc.weight", "fc.bias"}  # the frozen backbone has no update to measure
        assert all(0 < ratio < 1 for ratio in row["layers"].values())


def test_the_profile_splits_step_time_and_samples_the_system(healthy):
    base, _, _, _ = healthy
    profile = json.loads((base / "output" / "data" / "profile.json").read_text())
    assert len(profile["steps"]) == 50 and {s["epoch"] for s in profile["steps"]} == {1, 2, 3, 4, 5}
    assert all(s["data_s"] >= 0 and s["compute_s"] > 0 and s["images"] == 16 for s in profile["steps"])
    summary = profile["summary"]
    assert summary["steps"] == 50 and 0 <= summary["data_wait_share"] < 1 and summary["images_per_s"] > 0
    assert summary["compute_s"] == pytest.approx(sum(s["compute_s"] for s in profile["steps"]), abs=1e-2)
    assert profile["system"], "no system samples over a run of several seconds"
    assert all(0 <= row["cpu_percent"] <= 100 and row["memory_mb"] > 50 for row in profile["system"])


def test_a_learning_rate_of_10_trips_the_loss_or_exploding_tensor_rule(tmp_path):
    args = [*BASE_ARGS, "--freeze-backbone", "false", "--learning-rate", "10", "--epochs", "2"]
    _, rules, payload = train(tmp_path, args)
    assert rules["LossNotDecreasing"]["triggered"] or rules["ExplodingTensor"]["triggered"], payload
    page = (tmp_path / "output" / "data" / "debugger-report.html").read_text()
    assert "rules fired." in page and "fired at step" in page


def test_a_frozen_network_trips_loss_not_decreasing(tmp_path):
    """Weights that cannot move (a learning rate of 1e-12): the loss stays where it started."""
    args = [*BASE_ARGS, "--freeze-backbone", "false", "--learning-rate", "1e-12", "--epochs", "3"]
    _, rules, _ = train(tmp_path, args)
    assert rules["LossNotDecreasing"]["triggered"] and rules["LossNotDecreasing"]["step"] is not None
    assert not rules["ExplodingTensor"]["triggered"]
    # The report's weight-update ratios show why: the weights do not move.
    updates = json.loads((tmp_path / "output" / "data" / "weight_updates.json").read_text())
    assert updates["steps"] and all(r < 1e-6 for row in updates["steps"] for r in row["layers"].values())


def test_a_rare_class_trips_class_imbalance(tmp_path):
    """The sample with 2 training images left of one class, 40 of each other: 20 times rarer."""
    data = tmp_path / "data"
    shutil.copytree(SAMPLE_DATA, data)
    rare = sorted((data / "train").iterdir())[-1]
    for image in sorted(rare.iterdir())[2:]:
        image.unlink()
    args = [*HEALTHY, "--epochs", "2"]
    args[args.index(str(SAMPLE_DATA))] = str(data)
    _, rules, payload = train(tmp_path, args)
    imbalance = rules["ClassImbalance"]
    assert imbalance["triggered"], payload
    assert imbalance["parameters"]["samples"] == 200  # 50 for each of the 4 classes
    assert imbalance["details"]["largest_class"] > 10 * imbalance["details"]["smallest_class"]
    assert imbalance["details"]["counts"]["3"] == imbalance["details"]["smallest_class"]  # the rare class
    assert not rules["PoorWeightInitialization"]["triggered"] and not rules["DeadRelu"]["triggered"]


def test_debug_hook_false_turns_hook_rules_and_report_off(tmp_path):
    result = run_script(TRAIN_SCRIPT, [*BASE_ARGS, "--epochs", "1", "--debug-hook", "false"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    data = tmp_path / "output" / "data"
    assert (data / "metrics.json").is_file()
    for name in ("tensors", "rules.json", "debugger-report.html"):
        assert not (data / name).exists(), name


def test_make_debug_report_rebuilds_from_a_saved_trial(healthy, tmp_path):
    base, _, _, _ = healthy
    out = tmp_path / "rebuilt"
    out.mkdir()
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "debug-report",
            f"DEBUG_DIR={base / 'output' / 'data' / 'tensors'}",
            f"DEBUG_OUTPUT_DIR={out}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rebuilt = json.loads((out / "rules.json").read_text())
    original = json.loads((base / "output" / "data" / "rules.json").read_text())
    assert rebuilt == original
    page = (out / "debugger-report.html").read_text()
    assert "None of the 8 rules fired." in page and "<h2>Gradients</h2>" in page

    missing = subprocess.run(
        ["make", "--no-print-directory", "debug-report", f"DEBUG_DIR={tmp_path / 'nothing'}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode != 0
    errors = [line for line in missing.stderr.splitlines() if line.startswith("dogbreed debug-report: error: ")]
    assert errors == [f"dogbreed debug-report: error: no smdebug trial at {tmp_path / 'nothing'}"]
    unset = subprocess.run(
        ["make", "--no-print-directory", "debug-report"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert unset.returncode != 0 and "set DEBUG_DIR" in unset.stderr
