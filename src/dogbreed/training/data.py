"""Dataset discovery and validation for the dogImages layout.

A dataset has three splits, ``train``, ``valid`` and ``test``, each holding
one folder per class (``001.Affenpinscher``, ...). Everything is checked
before the first step, so a bad dataset fails in seconds with a message that
names the file, never with a traceback in the middle of an epoch.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from dogbreed.errors import DataError
from dogbreed.images import IMAGE_EXTENSIONS, ImageDecodeError, open_rgb
from dogbreed.labels import class_index

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
BAD_IMAGE_POLICIES = ("skip", "fail")

# Decoding at a reduced JPEG scale is enough to prove a file is whole.
_CHECK_DRAFT_SIZE = 32


@dataclass
class Split:
    name: str
    root: Path
    samples: list[tuple[Path, int]]


@dataclass
class DatasetSplits:
    class_folders: list[str]
    splits: dict[str, Split]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def class_counts(self, split: str) -> list[int]:
        counts = Counter(label for _, label in self.splits[split].samples)
        return [counts.get(i, 0) for i in range(len(self.class_folders))]


def resolve_split_dirs(data_dir: Path | None, split_dirs: dict[str, Path | None]) -> dict[str, Path]:
    """Where each split lives: its own folder when given, else ``data_dir/<split>``.

    ``data_dir`` may also be the parent of a single dataset folder, as left by
    unpacking ``dogImages.zip``.
    """
    resolved: dict[str, Path] = {}
    for split in SPLITS:
        given = split_dirs.get(split)
        if given is not None:
            resolved[split] = Path(given)
            continue
        if data_dir is None:
            raise DataError(
                f"no location for the {split!r} split: pass --data-dir (a folder holding "
                f"train/ valid/ test/) or --{split}-dir, or run with SM_CHANNEL_TRAINING or "
                f"SM_CHANNEL_{split.upper()} set"
            )
        resolved[split] = _dataset_root(Path(data_dir)) / split
    for split, path in resolved.items():
        if not path.is_dir():
            raise DataError(f"split {split!r} not found: {path} is not a directory")
    return resolved


def _dataset_root(data_dir: Path) -> Path:
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist")
    if any((data_dir / s).is_dir() for s in SPLITS):
        return data_dir
    children = [p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(children) == 1 and any((children[0] / s).is_dir() for s in SPLITS):
        return children[0]
    return data_dir


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _class_folders(split: str, root: Path) -> list[str]:
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p))
    if not folders:
        raise DataError(f"split {split!r} at {root} has no class folders")
    return folders


def _list_files(split: str, root: Path, class_folders: list[str]) -> list[tuple[Path, int]]:
    index = class_index(class_folders)
    samples: list[tuple[Path, int]] = []
    for folder in class_folders:
        files = sorted(p for p in (root / folder).rglob("*") if p.is_file() and _visible(p))
        if not files:
            raise DataError(f"class folder {root / folder} (split {split!r}) has no images")
        samples.extend((p, index[folder]) for p in files)
    return samples


def _check_file(path: Path) -> str | None:
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image file (extension {path.suffix or 'none'!r})"
    try:
        open_rgb(path, draft_size=_CHECK_DRAFT_SIZE)
    except ImageDecodeError as exc:
        return str(exc)
    except OSError as exc:
        return f"unreadable: {exc}"
    return None


def find_bad_images(paths: list[Path], workers: int) -> list[tuple[Path, str]]:
    """Decode every file once; return the ones that fail with the reason."""
    # Pillow releases the GIL while decoding, so threads scale across cores.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = pool.map(_check_file, paths, chunksize=32)
        return [(p, why) for p, why in zip(paths, problems, strict=True) if why is not None]


def discover(split_dirs: dict[str, Path], bad_image_policy: str = "skip", workers: int = 2) -> DatasetSplits:
    """Validate the three splits and list their samples.

    Class indices come from the sorted folder names of ``train``; ``valid``
    and ``test`` must hold the same classes. With ``bad_image_policy="skip"``
    files that do not decode are left out and reported; with ``"fail"`` the
    first one ends the job.
    """
    if bad_image_policy not in BAD_IMAGE_POLICIES:
        raise DataError(f"bad image policy must be one of {BAD_IMAGE_POLICIES}, not {bad_image_policy!r}")
    class_folders = _class_folders("train", split_dirs["train"])
    if len(class_folders) < 2:
        raise DataError(f"split 'train' at {split_dirs['train']} has only one class folder; need at least 2")
    for split in SPLITS[1:]:
        other = _class_folders(split, split_dirs[split])
        if other != class_folders:
            missing = sorted(set(class_folders) - set(other))
            extra = sorted(set(other) - set(class_folders))
            raise DataError(
                f"split {split!r} at {split_dirs[split]} has different classes from train: "
                f"missing {missing or 'none'}, extra {extra or 'none'}"
            )

    listed = {s: _list_files(s, split_dirs[s], class_folders) for s in SPLITS}
    all_paths = [p for s in SPLITS for p, _ in listed[s]]
    bad = find_bad_images(all_paths, workers)
    if bad and bad_image_policy == "fail":
        path, why = bad[0]
        more = f" (and {len(bad) - 1} more bad files)" if len(bad) > 1 else ""
        raise DataError(f"bad image {path}: {why}{more}")
    bad_paths = {p for p, _ in bad}
    for path, why in bad:
        log.warning("skipping bad image %s: %s", path, why)

    splits: dict[str, Split] = {}
    for split in SPLITS:
        samples = [(p, y) for p, y in listed[split] if p not in bad_paths]
        present = {y for _, y in samples}
        empty = [class_folders[i] for i in range(len(class_folders)) if i not in present]
        if empty:
            raise DataError(
                f"class folder {split_dirs[split] / empty[0]} (split {split!r}) has no usable images "
                "after skipping bad files"
            )
        splits[split] = Split(split, split_dirs[split], samples)
    if bad:
        log.warning("skipped %d bad image(s) of %d", len(bad), len(all_paths))
    return DatasetSplits(class_folders, splits, bad)


class ImageFileDataset(Dataset):
    """(image tensor, class index) pairs from a list of validated files."""

    def __init__(self, samples: list[tuple[Path, int]], transform, draft_size: int | None = None):
        self.samples = samples
        self.transform = transform
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """Sample ``key``: an index, or (index, seed) from :class:`SeededEpochOrder` for a random transform."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        path, label = self.samples[index]
        try:
            image = open_rgb(path, draft_size=self.draft_size)
        except (ImageDecodeError, OSError) as exc:
            # The file changed after validation; name it rather than crash obscurely.
            raise DataError(f"bad image {path}: {exc}") from exc
        if seed is None:
            return self.transform(image), label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), label


class SeededEpochOrder(Sampler):
    """The training order: a permutation per epoch, this rank's share of it, each position with its own
    augmentation seed.

    The permutation and the shares are torch's ``DistributedSampler``'s (one share without torchrun): shuffled
    by seed and epoch, padded by repetition to a multiple of the world size, every ``num_replicas``-th position
    from ``rank`` on. A position's augmentation seed comes from (seed, epoch, position in the permutation) alone,
    not from the worker count or from what ran before, so a job resumed mid-epoch (``start``: the samples this
    rank already trained on) gets exactly the batches and the random crops and flips it would have had without
    the interruption.
    """

    def __init__(self, size: int, seed: int, num_replicas: int = 1, rank: int = 0):
        self.seed, self.num_replicas, self.rank = seed, num_replicas, rank
        self.epoch, self.start = 1, 0
        # The sampler reads only the dataset's length: the range of indices stands in for it.
        indices: Any = range(size)
        self._shard: DistributedSampler[int] = DistributedSampler(
            indices, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed
        )

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return max(len(self._shard) - self.start, 0)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        self._shard.set_epoch(self.epoch)
        for position, index in enumerate(self._shard):
            if position >= self.start:
                yield index, _seed(self.seed, self.epoch, position * self.num_replicas + self.rank)


def _seed(*words: int) -> int:
    """A 32-bit seed mixed from ``words``: nearby inputs give unrelated streams."""
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0])


def own_process_group(_worker_id: int = 0) -> None:
    """A DataLoader worker's ``worker_init_fn``: move the worker into a process group of its own.

    A stop is meant for the training process, but group-wide signals reach its workers too: torchrun signals
    each worker's whole process group, and Ctrl-C in a terminal the foreground group. A worker killed by it
    would fail the current batch before the training process could stop at the batch boundary and checkpoint.
    Out of the group, the worker is still ended the usual ways: by the DataLoader, by multiprocessing's exit
    handler, and by its own watchdog when the training process is gone.
    """
    os.setpgid(0, 0)


def sampled_batches(
    samples: list, count: int, seed: int, transform, draft_size: int, batch_size: int, workers: int = 0
) -> Iterator[torch.Tensor]:
    """A seeded sample of ``count`` images from ``samples`` through ``transform``, batched, without labels.

    It draws from its own ``random.Random(seed)``, so taking a sample leaves the training run's random state alone.
    """
    chosen = random.Random(seed).sample(samples, min(count, len(samples)))
    loader = DataLoader(
        ImageFileDataset(chosen, transform, draft_size),
        batch_size=batch_size,
        num_workers=workers,
        worker_init_fn=own_process_group,
    )
    return (images for images, _ in loader)
