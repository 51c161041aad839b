"""Progress that is true: a line every ~30 s inside an epoch without a terminal, epochs counted from 1."""
import logging

import pytest

import experiments


@pytest.mark.slow
def test_an_epoch_without_a_terminal_logs_batch_progress(make_cfg, tmp_path, caplog, monkeypatch):
    from experiments import fit

    caplog.set_level(logging.INFO, logger="stemlab")
    monkeypatch.setattr(fit, "PROGRESS_EVERY_S", 0.0)  # a line after every batch
    experiments.run(make_cfg("train.epochs=2", "data.n_train=32", "train.bs=8"), tmp_path)
    lines = [r.getMessage() for r in caplog.records if "batch " in r.getMessage()]
    # 32 training images in batches of 8 (fastai drops no full batch): 4 batches per epoch, 2 epochs
    assert [line.split("img/s")[0].split()[:4] for line in lines] == \
        [["epoch", f"{e}/2", "batch", f"{b}/4"] for e in (1, 2) for b in (1, 2, 3, 4)]
    assert all("training ETA" in line for line in lines) and lines[-1].endswith("ETA 0 s")


@pytest.mark.slow
def test_a_run_says_what_its_profile_timing_will_cost_before_it_times(make_cfg, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="stemlab")
    experiments.run(make_cfg("profile.latency=true", "profile.budget_s=0"), tmp_path)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    start = next(i for i, m in enumerate(messages) if m.startswith("Profiling the model"))
    assert "a budget of 0 s, but at least 4 steps however long they take" in messages[start]
    # the count is said before it runs, then the timing's one estimate, then the end
    assert messages[start + 1].startswith("counting FLOPs and bytes per layer")
    assert messages[start + 2].startswith("timing estimate: a plain step takes") and messages[start + 3].startswith("Profiled in")


def test_a_run_warns_of_near_chance_accuracy_and_a_loaded_machine(make_cfg, tmp_path, caplog, monkeypatch):
    import json

    from experiments import runner, sanity

    assert sanity.near_chance(0.15, 10) and not sanity.near_chance(0.151, 10) and not sanity.near_chance(0.5, None)
    assert sanity.loaded({"load_avg": 2.5, "cpus": 2}) and not sanity.loaded({"load_avg": 2.0, "cpus": 2})
    caplog.set_level(logging.INFO, logger="stemlab")
    monkeypatch.setattr(runner, "machine_load", lambda: {"load_avg": 9.0, "cpus": 2})
    experiments.run(make_cfg("train.lr=1e-7", "data.num_classes=2"), tmp_path)  # a negligible LR: guessing between 2
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["hardware"]["load"] == {"load_avg": 9.0, "cpus": 2} and record["metrics"]["valid_acc"] <= 0.75
    assert f"Valid accuracy {100 * record['metrics']['valid_acc']:.2f}% is near chance (50.00% for 2 classes)" in caplog.text
    assert "Training timings taken on a loaded machine (load average 9.0 on 2 cores)" in caplog.text


def test_the_terminal_progress_table_counts_epochs_from_1():
    from experiments.fit import EpochsFromOne

    rows = []
    bar = EpochsFromOne()
    bar.mbar = type("Bar", (), {"write": lambda self, row, table: rows.append(row)})()
    bar._write_stats(["epoch", "train_loss", "time"])  # the header
    bar._write_stats([0, 0.5, "00:01"])                 # fastai's first epoch, numbered 0 by its Recorder
    assert rows == [["epoch", "train_loss", "time"], ["1", "0.500000", "00:01"]]
