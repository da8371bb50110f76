import logging
import shutil

import pytest

from dogbreed.errors import DataError
from dogbreed.training.data import discover, resolve_split_dirs
from tests.conftest import SAMPLE_DATA

NONE = {"train": None, "valid": None, "test": None}


def test_one_channel_holding_all_splits():
    dirs = resolve_split_dirs(SAMPLE_DATA, NONE)
    assert dirs == {s: SAMPLE_DATA / s for s in ("train", "valid", "test")}


def test_unzipped_parent_folder_is_descended(tmp_path):
    shutil.copytree(SAMPLE_DATA, tmp_path / "dogImages")
    assert resolve_split_dirs(tmp_path, NONE)["valid"] == tmp_path / "dogImages" / "valid"


def test_separate_channels_win_over_data_dir(tmp_path):
    dirs = resolve_split_dirs(None, {s: SAMPLE_DATA / s for s in ("train", "valid", "test")})
    assert dirs["test"] == SAMPLE_DATA / "test"


def test_missing_split_is_named(sample_copy):
    shutil.rmtree(sample_copy / "valid")
    with pytest.raises(DataError, match=r"split 'valid' not found: .*valid is not a directory"):
        resolve_split_dirs(sample_copy, NONE)


def test_no_location_at_all_says_what_to_set():
    with pytest.raises(DataError, match="--data-dir"):
        resolve_split_dirs(None, NONE)


def test_discovery_indexes_classes_by_sorted_folder():
    data = discover(resolve_split_dirs(SAMPLE_DATA, NONE))
    assert data.class_folders == ["001.Crimson_disc", "002.Emerald_square", "003.Cobalt_triangle", "004.Amber_stripes"]
    assert data.class_counts("train") == [40, 40, 40, 40]
    path, label = data.splits["test"].samples[-1]
    assert path.parent.name == "004.Amber_stripes" and label == 3


def test_empty_class_folder_is_named(sample_copy):
    for f in (sample_copy / "test" / "002.Emerald_square").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"class folder .*test/002.Emerald_square \(split 'test'\) has no images"):
        discover(resolve_split_dirs(sample_copy, NONE))


def test_split_with_other_classes_is_named(sample_copy):
    (sample_copy / "valid" / "004.Amber_stripes").rename(sample_copy / "valid" / "005.Other")
    with pytest.raises(DataError, match=r"split 'valid' .* missing \['004.Amber_stripes'\], extra \['005.Other'\]"):
        discover(resolve_split_dirs(sample_copy, NONE))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_image_fails_with_fail_policy(sample_copy):
    bad = sample_copy / "train" / "001.Crimson_disc" / "Crimson_disc_00007.jpg"
    _truncate(bad)
    with pytest.raises(DataError, match=r"bad image .*Crimson_disc_00007.jpg: corrupt or truncated"):
        discover(resolve_split_dirs(sample_copy, NONE), bad_image_policy="fail")


def test_bad_files_are_skipped_and_counted(sample_copy, caplog):
    _truncate(sample_copy / "train" / "001.Crimson_disc" / "Crimson_disc_00007.jpg")
    (sample_copy / "valid" / "002.Emerald_square" / "notes.jpg").write_text("not an image")
    (sample_copy / "test" / "003.Cobalt_triangle" / "README.txt").write_text("hello")
    (sample_copy / "test" / "003.Cobalt_triangle" / ".DS_Store").write_bytes(b"\0\1")  # hidden: ignored
    with caplog.at_level(logging.WARNING):
        data = discover(resolve_split_dirs(sample_copy, NONE), bad_image_policy="skip")
    assert sorted(p.name for p, _ in data.skipped) == ["Crimson_disc_00007.jpg", "README.txt", "notes.jpg"]
    assert data.class_counts("train") == [39, 40, 40, 40]
    assert "skipped 3 bad image(s) of 242" in caplog.text


def test_class_left_empty_by_skipping_is_an_error(sample_copy):
    for f in (sample_copy / "valid" / "001.Crimson_disc").iterdir():
        f.write_bytes(b"garbage")
    with pytest.raises(DataError, match="has no usable images after skipping bad files"):
        discover(resolve_split_dirs(sample_copy, NONE), bad_image_policy="skip")
