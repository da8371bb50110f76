import urllib.error

import pytest
import torch

from dogbreed.errors import ConfigError, WeightsError
from dogbreed.training import models
from dogbreed.training.models import ARCHITECTURES, build_model, find_weights_file, recomputes_batchnorm


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_head_is_replaced_for_the_class_count(arch):
    model = build_model(arch, 7).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 7)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_freeze_backbone_leaves_only_the_head_trainable(arch):
    model = build_model(arch, 5, freeze_backbone=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = ARCHITECTURES[arch].head
    assert trainable and all(n.startswith(head + ".") for n in trainable)
    assert all(p.requires_grad for p in build_model(arch, 5).parameters())


def test_unknown_architecture_and_too_few_classes():
    with pytest.raises(ConfigError, match="unknown model 'vgg'"):
        build_model("vgg", 3)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_model("resnet18", 1)


def _imagenet_file(tmp_path, arch="resnet18", name=None):
    reference = ARCHITECTURES[arch].builder(weights=None)
    path = tmp_path / (name or ARCHITECTURES[arch].weights_filename)
    torch.save(reference.state_dict(), path)
    return reference, path


def test_local_weights_file_is_loaded_into_the_backbone(tmp_path):
    reference, path = _imagenet_file(tmp_path)
    model = build_model("resnet18", 4, pretrained=True, weights_location=path)
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert model.fc.out_features == 4


def test_pretrained_channel_folder_is_searched(tmp_path):
    _, path = _imagenet_file(tmp_path)
    (tmp_path / "unrelated.txt").write_text("x")
    assert find_weights_file(ARCHITECTURES["resnet18"], tmp_path) == path
    with pytest.raises(WeightsError, match="does not exist"):
        find_weights_file(ARCHITECTURES["resnet50"], tmp_path / "missing")
    with pytest.raises(WeightsError, match=r"no weights for resnet50 .*found 2"):
        find_weights_file(ARCHITECTURES["resnet50"], _two_files(tmp_path))


def _two_files(tmp_path):
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("a.pth", "b.pth"):
        (folder / name).write_bytes(b"")
    return folder


def test_weights_of_another_architecture_are_rejected(tmp_path):
    _, path = _imagenet_file(tmp_path, "mobilenet_v2", "resnet18.pth")
    with pytest.raises(WeightsError, match="do not fit resnet18"):
        build_model("resnet18", 4, pretrained=True, weights_location=path)


def test_weights_file_with_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "resnet18.pth"
    torch.save({"x": Payload()}, path)
    with pytest.raises(WeightsError, match="cannot read pretrained weights"):
        build_model("resnet18", 4, pretrained=True, weights_location=path)


def test_failed_download_names_the_offline_alternatives(monkeypatch):
    def offline(**_kwargs):
        raise urllib.error.URLError("no route to host")

    arch = ARCHITECTURES["resnet18"]
    monkeypatch.setitem(ARCHITECTURES, "resnet18", models.Architecture("resnet18", offline, arch.weights, "fc"))
    with pytest.raises(WeightsError, match=r"could not download .*--pretrained-weights.*--pretrained false"):
        build_model("resnet18", 4, pretrained=True)


def test_batchnorm_recompute_defaults_per_architecture_and_never_for_a_frozen_backbone():
    assert recomputes_batchnorm("mobilenet_v2", None, freeze_backbone=False)
    assert not recomputes_batchnorm("resnet18", None, freeze_backbone=False)
    assert not recomputes_batchnorm("resnet50", None, freeze_backbone=False)
    assert recomputes_batchnorm("resnet18", True, freeze_backbone=False)
    assert not recomputes_batchnorm("mobilenet_v2", False, freeze_backbone=False)
    assert not recomputes_batchnorm("mobilenet_v2", True, freeze_backbone=True)
