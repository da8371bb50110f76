"""Pack a model artifact folder as ``model.tar.gz`` under its TargetModel path in a model store.

    dogbreed package --model-dir build/train/model --store build/model-store \\
        --target dog-breed-classifier/model.tar.gz

The artifact is checked first (metadata complete and consistent, the ONNX
graph it serves present), so a broken model never reaches a store. Only what
serving reads goes in: ``metadata.json`` and that graph (``model.onnx`` or
``model.int8.onnx``). An artifact written before training exported ONNX is
refused with the command that converts it. Files sit at the archive's root, as
SageMaker packs ``SM_MODEL_DIR``.
"""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path, PurePosixPath

from dogbreed.artifact import METADATA_FILE, read_metadata, served_onnx_file
from dogbreed.errors import ArtifactError, run_cli


def is_target_path(target: str) -> bool:
    """A TargetModel path a store can hold: relative, no ``.``/``..``/empty parts, ending in .tar.gz."""
    return (
        bool(target)
        and not target.startswith("/")
        and target.endswith(".tar.gz")
        and all(part not in ("", ".", "..") for part in target.split("/"))
    )


def artifact_files(model_dir: Path) -> list[str]:
    """What serving needs from the artifact in ``model_dir``: the metadata and the ONNX graph it serves.

    ``model.pth`` and the variant not served stay out: a smaller archive unpacks faster on a cold start.
    """
    _, served = served_onnx_file(read_metadata(model_dir))
    names = [METADATA_FILE, served]
    for name in names:
        if not (model_dir / name).is_file():
            raise ArtifactError(f"{model_dir / name} is missing")
    return names


def pack_artifact(model_dir: Path, archive: Path) -> Path:
    names = artifact_files(model_dir)
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for name in names:
            tar.add(model_dir / name, arcname=name)
    tmp.replace(archive)  # a server reading the store never sees half an archive
    return archive


def get_args_parser(prog: str = "dogbreed package") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="an artifact folder written by train_model.py")
    parser.add_argument("--store", type=Path, required=True, help="the model store's folder")
    parser.add_argument("--target", required=True, help="path inside the store, e.g. dog-breed-classifier/model.tar.gz")
    return parser


def run(argv: list[str] | None = None, prog: str = "dogbreed package") -> int:
    parser = get_args_parser(prog)
    args = parser.parse_args(argv)
    if not is_target_path(args.target):
        parser.error(f"--target must be a relative path ending in .tar.gz, got {args.target!r}")
    target = PurePosixPath(args.target)

    def pack() -> None:
        print(f"packed {args.model_dir} as {pack_artifact(args.model_dir, args.store / target)}")

    return run_cli(parser.prog, pack, errors=(ArtifactError,))
