"""The result record: strict JSON on write, tolerant reading (every unreadable file named, never fatal)."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from experiments import record


def refuse_non_finite(literal):
    raise AssertionError(f"{literal} in a strict JSON record")


def strict_load(path):
    """What jq or JavaScript would do: NaN / Infinity literals are errors."""
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse_non_finite)


def test_non_finite_numbers_are_written_as_null_and_read_back_as_none(tmp_path):
    result = {"config": {"stem": {"name": "resnet_7x7", "kernel": (7, 7)}, "seed": 0}, "status": "diverged",
              "metrics": {"valid_acc": math.nan, "train_loss": math.inf, "valid_loss": -math.inf,
                          "params": np.int64(11), "stem_share_flops": np.float32(0.5)},
              "profile_totals": {"per_group": [1.0, math.nan, {"deep": [math.inf]}]}, "path": tmp_path}
    path = record.write_record(tmp_path, result)
    stored = strict_load(path)
    assert stored["metrics"] == {"valid_acc": None, "train_loss": None, "valid_loss": None, "params": 11,
                                 "stem_share_flops": 0.5}
    assert stored["profile_totals"] == {"per_group": [1.0, None, {"deep": [None]}]}
    assert stored["config"]["stem"]["kernel"] == [7, 7] and stored["path"] == str(tmp_path)
    assert stored["format"] == record.RECORD_FORMAT
    assert record.read_record(path) == stored
    assert math.isnan(record.metric(stored))


def test_tables_first_result_last_and_nothing_half_written(tmp_path):
    layers = pd.DataFrame({"name": ["stem.0"], "flops_fwd": [4.0]})
    history = pd.DataFrame({"epoch": [0], "accuracy": [0.5]})
    record.write_record(tmp_path, {"config": {}, "status": "completed"}, layers, history)
    result, layers_csv = tmp_path / record.RESULT_FILE, tmp_path / record.LAYERS_FILE
    assert result.stat().st_mtime_ns >= layers_csv.stat().st_mtime_ns
    assert record.read_table(layers_csv).equals(layers) and record.read_table(tmp_path / record.HISTORY_FILE).equals(history)

    class BrokenTable(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            raise OSError(28, "No space left on device")

    # a full disk: no half-written table, no temp file; result.json, small, says what was not written
    fresh = tmp_path / "full_disk"
    record.write_record(fresh, {"config": {}, "status": "completed", "environment": {}}, BrokenTable(layers))
    assert [p.name for p in fresh.iterdir()] == [record.RESULT_FILE]
    assert json.loads((fresh / record.RESULT_FILE).read_text()) == {
        "format": 1, "config": {}, "status": "completed",
        "incomplete": "the disk was full (No space left on device): the tables and the other fields were not written"}


@pytest.mark.parametrize("content, reason", [
    (b'{"status": "completed"\xff}', "is not UTF-8 text (byte 22)"),
    (b'{"status": "completed",', "is not JSON (Expecting property name enclosed in double quotes at line 1)"),
    (b"[1, 2]", "is not a result record (a JSON list, not an object)"),
    (b'{"status": "completed"}', "is not a result record (no config)"),
    (b'{"config": {"stem": {"name": "x"}}}', "is not a result record (no status)"),
    (b'{"config": {"stem": "x"}, "status": "completed"}', 'is not a valid result record (config.stem is "x", not an object)'),
    (b'{"config": {"stem": {}}, "status": "completed"}', "is not a result record (no config.stem.name)"),
    # valid JSON with a wrong-typed field: every field a reader uses is typed (issue 26)
    (b'{"config": {"stem": {"name": "x"}}, "status": "completed", "metrics": "oops"}',
     'is not a valid result record (metrics is "oops", not an object)'),
    (b'{"config": {"stem": {"name": "x"}}, "status": "completed", "metrics": {"valid_acc": "0.5"}}',
     'is not a valid result record (metrics.valid_acc is "0.5", not a number or null)'),
    (b'{"config": {"stem": {"name": "x"}}, "status": "completed", "metrics": {"valid_acc": true}}',
     "is not a valid result record (metrics.valid_acc is true, not a number or null)"),
    (b'{"config": {"stem": {"name": "x"}, "train": [1]}, "status": "completed"}',
     "is not a valid result record (config.train is [1], not an object)"),
    (b'{"config": {"stem": {"name": "x"}}, "status": "done"}',
     "is not a valid result record (status is 'done', not one of completed, diverged, failed, interrupted)"),
    (b'{"config": {"stem": {"name": "x"}}, "status": "completed", "resumed_epochs": [1, "2"]}',
     'is not a valid result record (resumed_epochs.1 is "2", not an integer)'),
    (b'{"config": {"stem": {"name": "x"}}, "status": "completed", "model": {"stem": {"name": "x"}, "in_channels": 3.5}}',
     "is not a valid result record (model.in_channels is 3.5, not an integer)"),
    (b'{"format": "1", "config": {"stem": {"name": "x"}}, "status": "completed"}',
     'is not a valid result record (format is "1", not an integer)'),
    (b'{"format": 99, "config": {"stem": {"name": "x"}}, "status": "completed"}',
     "has record format 99, newer than this reader's 1 (update stemlab)"),
])
def test_unreadable_records_come_back_with_the_reason(tmp_path, content, reason):
    path = tmp_path / "result.json"
    path.write_bytes(content)
    got = record.read_record(path)
    assert got == record.Unreadable(path, reason)
    assert str(got) == f"{path}: {reason}"


def test_old_records_with_nan_literals_and_no_format_are_read(tmp_path):
    path = tmp_path / "result.json"
    path.write_text('{"config": {"stem": {"name": "resnet_7x7"}, "seed": 1}, "status": "completed",'
                    ' "metrics": {"valid_acc": 0.25, "stem_share_time": NaN, "ms_fwd": Infinity}}')
    got = record.read_record(path)
    assert got["metrics"] == {"valid_acc": 0.25, "stem_share_time": None, "ms_fwd": None}
    assert record.metric(got) == 0.25


def test_unreadable_and_missing_tables(tmp_path):
    assert record.read_table(tmp_path / "history.csv") is None
    (tmp_path / "history.csv").write_bytes(b"")
    assert record.read_table(tmp_path / "history.csv") == record.Unreadable(
        tmp_path / "history.csv", "is not a readable CSV table (EmptyDataError)")


def test_metric_is_the_final_validation_accuracy():
    assert record.metric({"metrics": {"valid_acc": 0.75}}) == 0.75
    assert record.metric({"metrics": {"valid_acc": 1}}) == 1.0
    for empty in ({}, {"metrics": None}, {"metrics": {"valid_acc": None}}, {"metrics": {"valid_acc": "0.5"}}):
        assert math.isnan(record.metric(empty))


def test_run_name_and_failure_fields():
    config = {"stem": {"name": "resnet_7x7"}, "trunk": {"name": "xresnet18"}, "data": {"name": "mnist5k"}, "seed": 3}
    assert record.run_name(config) == "resnet_7x7-xresnet18-mnist5k-s3"
    try:
        raise RuntimeError("out of memory")
    except RuntimeError as e:
        fields = record.failure(e)
    assert fields["status"] == "failed" and fields["error"] == "RuntimeError: out of memory"
    assert fields["traceback"].startswith("Traceback") and "out of memory" in fields["traceback"]
