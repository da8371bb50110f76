"""Class folder names and the labels people read.

Class folders follow the Udacity dogImages naming, ``NNN.Breed_name``. The
class index is the position of the folder name in sorted order, the same rule
torchvision's ImageFolder uses, so training and serving agree on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_NUMERIC_PREFIX = re.compile(r"^\d+\.")


def display_label(class_folder: str) -> str:
    """``"001.Affenpinscher"`` -> ``"Affenpinscher"``; ``"005.Irish_water_spaniel"`` -> ``"Irish water spaniel"``."""
    return _NUMERIC_PREFIX.sub("", class_folder).replace("_", " ").strip()


def class_index(class_folders: Iterable[str]) -> dict[str, int]:
    """Map each class folder name to its index in sorted order."""
    return {name: i for i, name in enumerate(sorted(class_folders))}
