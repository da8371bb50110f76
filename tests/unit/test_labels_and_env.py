from pathlib import Path

import pytest

from dogbreed import sagemaker_env
from dogbreed.labels import class_index, display_label


@pytest.mark.parametrize(
    "folder, label",
    [
        ("001.Affenpinscher", "Affenpinscher"),
        ("005.Irish_water_spaniel", "Irish water spaniel"),
        ("133.Yorkshire_terrier", "Yorkshire terrier"),
        ("Plain_name", "Plain name"),
    ],
)
def test_display_label_strips_prefix_and_underscores(folder, label):
    assert display_label(folder) == label


def test_class_index_follows_sorted_folder_names():
    assert class_index(["010.B", "002.A", "100.C"]) == {"002.A": 0, "010.B": 1, "100.C": 2}


def test_paths_follow_base_dir_and_specific_overrides(clean_env, tmp_path):
    clean_env.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    assert sagemaker_env.model_dir() == tmp_path / "model"
    assert sagemaker_env.output_data_dir() == tmp_path / "output" / "data"
    assert sagemaker_env.checkpoint_dir() == tmp_path / "checkpoints"
    assert sagemaker_env.failure_file() == tmp_path / "output" / "failure"
    clean_env.setenv("SM_MODEL_DIR", "/elsewhere/model")
    clean_env.setenv("SM_CHANNEL_TRAIN", "/data/train")
    assert sagemaker_env.model_dir() == Path("/elsewhere/model")
    assert sagemaker_env.channel_dir("train") == Path("/data/train")
    assert sagemaker_env.channel_dir("valid") is None


def test_write_failure_records_reason(clean_env, tmp_path):
    clean_env.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    path = sagemaker_env.write_failure("split 'valid' not found")
    assert path == tmp_path / "output" / "failure"
    assert path.read_text() == "split 'valid' not found\n"


def test_debug_hook_config_found_by_env_or_default_location(clean_env, tmp_path):
    clean_env.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    assert sagemaker_env.debug_hook_config_file() is None
    default = tmp_path / "input" / "config" / "debughookconfig.json"
    default.parent.mkdir(parents=True)
    default.write_text("{}")
    assert sagemaker_env.debug_hook_config_file() == default
    explicit = tmp_path / "other.json"
    explicit.write_text("{}")
    clean_env.setenv("SMDEBUG_CONFIG_FILE_PATH", str(explicit))
    assert sagemaker_env.debug_hook_config_file() == explicit


@pytest.mark.parametrize(
    "word, expected",
    [
        ("true", True),
        ("Yes", True),
        (" on ", True),
        ("1", True),
        (True, True),
        ("false", False),
        ("NO", False),
        ("off", False),
        ("0", False),
        (False, False),
        ("maybe", None),
        ("", None),
    ],
)
def test_one_word_list_for_booleans_everywhere(word, expected):
    from dogbreed import settings

    assert settings.parse_bool(word) is expected


def test_a_flag_variable_is_true_only_for_a_true_word(monkeypatch):
    from dogbreed import settings

    for value, expected in (("true", True), ("on", True), ("false", False), ("garbage", False)):
        monkeypatch.setenv("DOGBREED_TEST_FLAG", value)
        assert settings.flag("DOGBREED_TEST_FLAG") is expected
    monkeypatch.delenv("DOGBREED_TEST_FLAG")
    assert settings.flag("DOGBREED_TEST_FLAG") is False
