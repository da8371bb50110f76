import filecmp
import re

import torch

from dogbreed.training import reports
from dogbreed.training.metrics import METRIC_DEFINITIONS, OBJECTIVE_METRIC, format_metrics, parse_metrics
from tests.conftest import SAMPLE_DATA


def test_metric_line_format_and_regexes_agree():
    line = format_metrics(epoch=3, train_loss=0.91, train_accuracy=0.5, val_loss=0.88, val_accuracy=0.71)
    assert line == "epoch=3 train_loss=0.9100 train_accuracy=0.5000 val_loss=0.8800 val_accuracy=0.7100"
    found = parse_metrics(
        line + "\nbest_epoch=3 val_loss=0.8800 val_accuracy=0.7100\ntest_loss=1.2e-03 test_accuracy=1\n"
    )
    assert found["validation:accuracy"] == [0.71, 0.71]
    assert found["train:loss"] == [0.91]
    assert found["test:loss"] == [0.0012] and found["test:accuracy"] == [1.0]


def test_definitions_are_what_sagemaker_accepts():
    names = [d["Name"] for d in METRIC_DEFINITIONS]
    assert OBJECTIVE_METRIC in names and len(set(names)) == len(names)
    for definition in METRIC_DEFINITIONS:
        assert set(definition) == {"Name", "Regex"}
        assert re.compile(definition["Regex"]).groups == 1


def test_val_regex_does_not_match_other_prefixes():
    assert parse_metrics("best_val_accuracy=0.9 xval_loss=1.0")["validation:accuracy"] == []


def test_confusion_matrix_and_per_class_accuracy(tmp_path):
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    predictions = torch.tensor([0, 1, 1, 1, 0, 2])
    matrix = reports.confusion_matrix(targets, predictions, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    rows = reports.per_class_report(matrix, ["001.A", "002.B", "003.C"], ["A", "B", "C"])
    assert [r["accuracy"] for r in rows] == [0.5, 1.0, 0.5]
    path = reports.plot_confusion_matrix(tmp_path, matrix, ["A", "B", "C"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_data_is_reproduced_exactly_by_its_generator(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_sample", SAMPLE_DATA.parent / "make_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.generate(tmp_path / "sample")
    assert len(written) == 240
    committed = sorted(p.relative_to(SAMPLE_DATA) for p in SAMPLE_DATA.rglob("*.jpg"))
    assert committed == sorted(p.relative_to(tmp_path / "sample") for p in written)
    mismatched = [p for p in committed if not filecmp.cmp(SAMPLE_DATA / p, tmp_path / "sample" / p, shallow=False)]
    assert mismatched == []
    assert sum((SAMPLE_DATA / p).stat().st_size for p in committed) < 1_000_000


def test_progress_writes_plain_lines_with_its_unit_when_not_a_terminal(caplog):
    import logging

    from dogbreed.progress import Progress

    with caplog.at_level(logging.INFO, logger="dogbreed.progress"):
        items = list(Progress(iter(range(7)), total=7, desc="upload", log_every=3, interactive=False, unit="file"))
    assert items == list(range(7))
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" file/s")[0].rsplit(" ", 1)[0] for line in lines] == [
        "upload step 3/7",
        "upload step 6/7",
        "upload step 7/7",
    ]
