"""Local mode's own logic, without Docker: where each job's files go and how a failed job is recognised."""

from __future__ import annotations

import pytest

from dogbreed.workflows import local


def test_each_job_gets_a_folder_no_earlier_job_used(tmp_path, monkeypatch):
    monkeypatch.setattr(local.time, "strftime", lambda *_: "20261202-120000")
    first = local.new_job_dir(tmp_path, "train_model.py")
    assert first == tmp_path / "train-model-20261202-120000"
    first.mkdir()
    second = local.new_job_dir(tmp_path, "train_model.py")
    assert second == tmp_path / "train-model-20261202-120000-1"
    (tmp_path / local.CONTAINER_ROOT / second.name).mkdir(parents=True)  # a job still running there
    assert local.new_job_dir(tmp_path, "train_model.py").name == "train-model-20261202-120000-2"
    assert local.new_job_dir(tmp_path, "hpo.py").name == "hpo-20261202-120000"


@pytest.fixture
def container_root(tmp_path):
    (tmp_path / "artifacts" / "model").mkdir(parents=True)
    (tmp_path / "artifacts" / "output").mkdir(parents=True)
    return tmp_path


def test_the_failure_file_the_containers_wrote_is_the_reason(container_root):
    (container_root / "artifacts" / "output" / "failure").write_text("split 'valid' not found\nmore detail\n")
    assert local.job_failure(container_root) == "split 'valid' not found"


def test_a_job_that_wrote_no_model_failed_even_without_a_failure_file(container_root):
    assert local.job_failure(container_root) == "the training job wrote no model (see its log above)"
    (container_root / "artifacts" / "model" / "model.pth").write_bytes(b"x")
    assert local.job_failure(container_root) is None
    (container_root / "artifacts" / "output" / "failure").write_text("")
    assert local.job_failure(container_root) == "the training script wrote an empty failure file"
