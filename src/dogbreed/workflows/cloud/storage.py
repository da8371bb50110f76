"""S3 for the cloud commands: model archives checked before upload, and a local dataset synced as a channel."""

from __future__ import annotations

import argparse
import json
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dogbreed.progress import Progress
from dogbreed.workflows.aws import Aws, CloudError, aws_errors, split_s3_uri


def check_archive(path: Path) -> dict[str, Any]:
    """A model.tar.gz that the serving image can serve; its metadata. Nothing broken gets uploaded."""
    from dogbreed.artifact import METADATA_FILE, served_onnx_file, validate_metadata
    from dogbreed.errors import ArtifactError

    if not path.is_file():
        raise CloudError(f"model archive {path} does not exist")
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {member.name.removeprefix("./"): member for member in tar.getmembers()}
            if METADATA_FILE not in members:
                raise CloudError(
                    f"{path} is not a model artifact: it must hold {METADATA_FILE} at its root "
                    f"(make local-train, train-remote or make model-store writes one)"
                )
            packed = tar.extractfile(members[METADATA_FILE])
            if packed is None:
                raise CloudError(f"{path}: {METADATA_FILE} is not a regular file")
            metadata = json.load(packed)
    except (tarfile.TarError, OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CloudError(f"{path} is not a readable model.tar.gz: {exc}") from None
    try:
        validate_metadata(metadata, f"{path}:{METADATA_FILE}")
        _, served = served_onnx_file(metadata)
    except ArtifactError as exc:
        raise CloudError(f"{path}: {exc}") from None
    if served not in members:
        raise CloudError(f"{path} does not hold {served}, the ONNX graph its metadata serves")
    return metadata


def put_artifact(aws: Aws, source: str, bucket: str, key: str) -> str:
    """Upload a local model.tar.gz (checked first) or copy an S3 one to s3://bucket/key."""
    destination = f"s3://{bucket}/{key}"
    with aws_errors():
        if source.startswith("s3://"):
            src_bucket, src_key = split_s3_uri(source)
            aws.s3.copy({"Bucket": src_bucket, "Key": src_key}, bucket, key)
        else:
            check_archive(Path(source))
            aws.s3.upload_file(source, bucket, key)
    print(f"uploaded {source} to {destination}", flush=True)
    return destination


def first_object(aws: Aws, uri: str) -> str | None:
    bucket, key = split_s3_uri(uri)
    with aws_errors():
        listed = aws.s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    contents = listed.get("Contents") or []
    return contents[0]["Key"] if contents else None


def require_image_folder(aws: Aws, uri: str | None, kind: str = "images") -> str:
    """``uri``, an S3 folder with at least one object: a job's input; else a one-line error."""
    if not uri or not uri.startswith("s3://"):
        raise CloudError(f"--input must be an S3 folder of {kind}, e.g. s3://BUCKET/images/")
    if first_object(aws, uri) is None:
        raise CloudError(f"no objects under {uri}")
    return uri


def sync_folder(aws: Aws, folder: Path, bucket: str, key_prefix: str, threads: int = 16) -> str:
    """Upload the files of ``folder`` missing (or of another size) under s3://bucket/key_prefix/."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise CloudError(f"{folder} holds no files")
    with aws_errors():
        existing = {}
        for page in aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix + "/"):
            existing.update({obj["Key"]: obj["Size"] for obj in page.get("Contents", [])})
        todo = [(p, f"{key_prefix}/{p.relative_to(folder).as_posix()}") for p in files]
        todo = [(p, key) for p, key in todo if existing.get(key) != p.stat().st_size]
        with ThreadPoolExecutor(threads) as pool:
            uploads = pool.map(lambda item: aws.s3.upload_file(str(item[0]), bucket, item[1]), todo)
            for _ in Progress(uploads, total=len(todo), desc="upload", log_every=500, unit="file"):
                pass
    print(
        f"s3://{bucket}/{key_prefix}/: {len(todo)} file(s) uploaded, {len(files) - len(todo)} already there", flush=True
    )
    return f"s3://{bucket}/{key_prefix}/"


def resolve_data(aws: Aws, args: argparse.Namespace, bucket: str) -> str:
    """The ``training`` channel: an S3 prefix as given, or a local dataset folder synced to PREFIX/data/NAME/."""
    if not args.data:
        raise CloudError(
            "no training data: set --data (DATA in make) to s3://BUCKET/PREFIX/ or a local folder "
            "holding train/ valid/ test/"
        )
    if args.data.startswith("s3://"):
        if first_object(aws, args.data) is None:
            raise CloudError(f"no objects under {args.data}: upload the dataset there, or pass a local folder")
        return args.data if args.data.endswith("/") else args.data + "/"
    folder = Path(args.data)
    if not folder.is_dir():
        raise CloudError(f"data folder {folder} does not exist")
    if not ((folder / "train").is_dir() or (folder / "dogImages" / "train").is_dir()):
        raise CloudError(f"{folder} holds no train/ folder (expected train/ valid/ test/, as in dogImages)")
    return sync_folder(aws, folder, bucket, f"{args.prefix}/data/{folder.resolve().name}")
