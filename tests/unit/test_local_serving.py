"""make local-serve's choice of models: the newest archive of each architecture, under its TargetModel path."""

from __future__ import annotations

import os

import pytest

from dogbreed.workflows.local import run
from dogbreed.workflows.local_serving import LocalServeError, build_store, newest_artifact


def _archive(path, content: bytes, mtime: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, (mtime, mtime))
    return path


def test_the_newest_archive_wins_whatever_its_folder_is_called(tmp_path):
    _archive(tmp_path / "resnet18" / "zzz-job" / "model.tar.gz", b"old", 1_000)
    newest = _archive(tmp_path / "resnet18" / "aaa-job" / "model.tar.gz", b"new", 2_000)
    assert newest_artifact(tmp_path / "resnet18") == newest
    assert newest_artifact(tmp_path / "nothing") is None


def test_the_store_holds_each_architecture_under_its_target(tmp_path, capsys):
    outputs, store = tmp_path / "local", tmp_path / "store"
    _archive(outputs / "resnet18" / "job" / "model.tar.gz", b"resnet", 1_000)
    assert build_store(outputs, store) == ["dog-breed-classifier/model.tar.gz"]
    assert (store / "dog-breed-classifier" / "model.tar.gz").read_bytes() == b"resnet"
    assert "no mobilenet_v2 yet" in capsys.readouterr().out
    _archive(outputs / "mobilenet_v2" / "job" / "model.tar.gz", b"mobile", 1_000)
    assert build_store(outputs, store)[1] == "dog-breed-classifier-mobile/model.tar.gz"


def test_without_a_resnet18_it_says_what_to_run(tmp_path):
    with pytest.raises(LocalServeError, match="run make local-train"):
        build_store(tmp_path / "local", tmp_path / "store")


def test_newest_prints_the_path_or_nothing(tmp_path, capsys):
    archive = _archive(tmp_path / "resnet18" / "job" / "model.tar.gz", b"x", 1_000)
    assert run(["newest", str(tmp_path / "resnet18")]) == 0
    assert capsys.readouterr().out.strip() == str(archive)
    assert run(["newest", str(tmp_path / "none")]) == 0
    assert capsys.readouterr().out.strip() == ""
