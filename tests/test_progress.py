"""Progress that is true: a line every ~30 s inside an epoch without a terminal, epochs counted from 1."""
import logging

import experiments


def test_an_epoch_without_a_terminal_logs_batch_progress(make_cfg, tmp_path, caplog, monkeypatch):
    from experiments import fit

    caplog.set_level(logging.INFO, logger="stemlab")
    monkeypatch.setattr(fit.BatchProgress.__init__, "__defaults__", (0.0,))  # a line after every batch
    experiments.run(make_cfg("train.epochs=2", "data.n_train=32", "train.bs=8"), tmp_path)
    lines = [r.getMessage() for r in caplog.records if "batch " in r.getMessage()]
    # 32 training images in batches of 8 (fastai drops no full batch): 4 batches per epoch, 2 epochs
    assert [line.split("img/s")[0].split()[:4] for line in lines] == \
        [["epoch", f"{e}/2", "batch", f"{b}/4"] for e in (1, 2) for b in (1, 2, 3, 4)]
    assert all("training ETA" in line for line in lines) and lines[-1].endswith("ETA 0 s")


def test_a_run_says_what_its_profile_timing_will_cost_before_it_times(make_cfg, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="stemlab")
    experiments.run(make_cfg("profile.latency=true", "profile.budget_s=0"), tmp_path)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    start = next(i for i, m in enumerate(messages) if m.startswith("Profiling the model"))
    assert "a budget of 0 s, but at least 4 steps however long they take" in messages[start]
    assert messages[start + 1].startswith("timing estimate: a step takes") and messages[start + 2].startswith("Profiled in")
