import json

import pytest
import torch

from dogbreed.errors import ArtifactError
from dogbreed.training.artifact import METADATA_FILE, WEIGHTS_FILE, load_artifact, make_metadata, save_artifact
from dogbreed.training.models import build_model

FOLDERS = ["001.Affenpinscher", "002.Afghan_hound", "003.Airedale_terrier"]


def _write(tmp_path, arch="mobilenet_v2"):
    model = build_model(arch, len(FOLDERS))
    metadata = make_metadata(
        architecture=arch,
        class_folders=FOLDERS,
        input_size=64,
        mean=[0.5] * 3,
        std=[0.25] * 3,
        metrics={"test_accuracy": 0.5},
        hyperparameters={"epochs": 1},
    )
    save_artifact(tmp_path, model.state_dict(), metadata)
    return model


def test_round_trip_rebuilds_the_same_model(tmp_path):
    original = _write(tmp_path).eval()
    loaded, metadata = load_artifact(tmp_path)
    assert metadata["labels"] == ["Affenpinscher", "Afghan hound", "Airedale terrier"]
    assert metadata["versions"]["torch"] == torch.__version__
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(original(x), loaded(x))
    # The weights file is plain tensors: loadable with weights_only=True by anyone.
    assert isinstance(torch.load(tmp_path / WEIGHTS_FILE, weights_only=True), dict)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("architecture"), "missing field 'architecture'"),
        (lambda m: m.update(num_classes=4), "num_classes is 4 but there are 3 class folders"),
        (lambda m: m.update(architecture="vgg"), "unknown model 'vgg'"),
        (lambda m: m.update(std=[0, 1, 1]), "std must be positive"),
        (lambda m: m.update(format_version=99), "format_version 99 is not supported"),
    ],
)
def test_inconsistent_metadata_is_reported(tmp_path, change, message):
    _write(tmp_path)
    metadata = json.loads((tmp_path / METADATA_FILE).read_text())
    change(metadata)
    (tmp_path / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(ArtifactError, match=message):
        load_artifact(tmp_path)


def test_missing_or_broken_files(tmp_path):
    with pytest.raises(ArtifactError, match=r"metadata\.json is missing"):
        load_artifact(tmp_path)
    _write(tmp_path)
    (tmp_path / METADATA_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(tmp_path)


def test_weights_of_another_architecture_are_rejected(tmp_path):
    _write(tmp_path)
    torch.save(build_model("resnet18", 3).state_dict(), tmp_path / WEIGHTS_FILE)
    with pytest.raises(ArtifactError, match=r"does not match the metadata \(mobilenet_v2, 3 classes\)"):
        load_artifact(tmp_path)


def test_code_in_the_weights_file_is_never_executed(tmp_path):
    _write(tmp_path)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Payload()}, tmp_path / WEIGHTS_FILE)
    with pytest.raises(ArtifactError, match="cannot read"):
        load_artifact(tmp_path)
    assert not marker.exists()
