"""Model construction, shared by training and serving.

Three torchvision architectures are supported. Each gets its ImageNet
classifier replaced by a fresh linear layer for the dataset's class count.
ImageNet weights come from torchvision's own download, or from a local file
(or a folder such as a SageMaker ``pretrained`` channel) for jobs that run
without internet access.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from dogbreed.errors import ConfigError, WeightsError


@dataclass(frozen=True)
class Architecture:
    name: str
    builder: Callable[..., nn.Module]
    weights: models.WeightsEnum
    head: str  # attribute holding the classifier
    # Recompute BatchNorm's running statistics before each evaluation when the backbone trains. MobileNetV2's
    # 52 BatchNorm layers let the running averages lag the fast-moving weights of a young network so far that
    # eval mode answered one class for every image (chance on the sample) while batch statistics scored 0.98.
    recompute_batchnorm: bool = False

    def replace_head(self, model: nn.Module, num_classes: int) -> None:
        head = self.head_module(model)
        # The ResNets' fc is the Linear itself; MobileNetV2's classifier is Sequential(Dropout, Linear).
        old = head[-1] if isinstance(head, nn.Sequential) else head
        if not isinstance(old, nn.Linear):
            raise ConfigError(f"{self.name}: its classifier {self.head!r} does not end in a Linear layer")
        new = nn.Linear(old.in_features, num_classes)
        if isinstance(head, nn.Sequential):
            head[-1] = new
        else:
            setattr(model, self.head, new)

    def head_module(self, model: nn.Module) -> nn.Module:
        return getattr(model, self.head)

    @property
    def weights_filename(self) -> str:
        """The file name torchvision downloads, e.g. ``resnet18-f37072fd.pth``."""
        return self.weights.url.rsplit("/", 1)[-1]


ARCHITECTURES: dict[str, Architecture] = {
    "resnet18": Architecture("resnet18", models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1, "fc"),
    "resnet50": Architecture("resnet50", models.resnet50, models.ResNet50_Weights.IMAGENET1K_V2, "fc"),
    "mobilenet_v2": Architecture(
        "mobilenet_v2",
        models.mobilenet_v2,
        models.MobileNet_V2_Weights.IMAGENET1K_V2,
        "classifier",
        recompute_batchnorm=True,
    ),
}


# How many training images (a seeded sample) the recomputed BatchNorm statistics average over.
BATCHNORM_STATS_IMAGES = 1024


def recomputes_batchnorm(arch_name: str, requested: bool | None, freeze_backbone: bool) -> bool:
    """Whether training recomputes BatchNorm statistics: as ``requested``, else the architecture's default.

    Never for a frozen backbone: its BatchNorm layers stay in eval mode and keep the pretrained statistics.
    """
    if freeze_backbone:
        return False
    return get_architecture(arch_name).recompute_batchnorm if requested is None else requested


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(sorted(ARCHITECTURES))}") from None


def find_weights_file(arch: Architecture, location: Path) -> Path:
    """Resolve ``location`` (a file, or a folder such as a ``pretrained`` channel) to a weights file.

    In a folder, torchvision's own file name wins, then ``<arch>.pth``, then
    the only ``.pth``/``.pt`` file there.
    """
    if location.is_file():
        return location
    if not location.is_dir():
        raise WeightsError(f"pretrained weights not found: {location} does not exist")
    for name in (arch.weights_filename, f"{arch.name}.pth"):
        if (location / name).is_file():
            return location / name
    candidates = sorted(p for p in location.iterdir() if p.suffix in {".pth", ".pt"} and p.is_file())
    if len(candidates) == 1:
        return candidates[0]
    raise WeightsError(
        f"no weights for {arch.name} in {location}: expected {arch.weights_filename} "
        f"or {arch.name}.pth (found {len(candidates)} .pth/.pt files)"
    )


def _load_local_weights(arch: Architecture, path: Path) -> nn.Module:
    model = arch.builder(weights=None)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable files
        raise WeightsError(f"cannot read pretrained weights {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"pretrained weights {path} are not a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0]
        raise WeightsError(f"pretrained weights {path} do not fit {arch.name}: {first_line}") from exc
    return model


def _download_weights(arch: Architecture) -> nn.Module:
    try:
        return arch.builder(weights=arch.weights)
    except Exception as exc:  # URLError, HTTPError, hash mismatch, ...
        raise WeightsError(
            f"could not download ImageNet weights for {arch.name} from {arch.weights.url}: {exc}. "
            "Without internet access pass --pretrained-weights FILE_OR_DIR, give the job a "
            "'pretrained' channel, or train from scratch with --pretrained false"
        ) from exc


def build_model(
    arch_name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    weights_location: Path | None = None,
    freeze_backbone: bool = False,
) -> nn.Module:
    """Build ``arch_name`` with a new head of ``num_classes`` outputs.

    With ``pretrained``, ImageNet weights come from ``weights_location`` when
    given, else from torchvision's download. With ``freeze_backbone`` only the
    new head is trainable (feature extraction).
    """
    arch = get_architecture(arch_name)
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    if not pretrained:
        model = arch.builder(weights=None)
    elif weights_location is not None:
        model = _load_local_weights(arch, find_weights_file(arch, weights_location))
    else:
        model = _download_weights(arch)
    arch.replace_head(model, num_classes)
    if freeze_backbone:
        for param in model.parameters():
            param.requires_grad = False
        for param in arch.head_module(model).parameters():
            param.requires_grad = True
    return model


def set_train_mode(model: nn.Module, arch_name: str, freeze_backbone: bool) -> None:
    """Put ``model`` in training mode; a frozen backbone stays in eval mode.

    Keeping a frozen backbone in eval mode stops BatchNorm from drifting its
    running statistics away from the pretrained ones.
    """
    model.train()
    if freeze_backbone:
        model.eval()
        get_architecture(arch_name).head_module(model).train()
