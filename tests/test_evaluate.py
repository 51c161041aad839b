"""Everyday tools on a finished run: evaluate its saved model (eval mode) and export it (checked by running it)."""
import json
import shutil
from pathlib import Path

import pytest
import torch

import experiments
from analyze.__main__ import main
from experiments.checkpoint import load_trained_model
from tests.conftest import TINY


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from experiments.config import CONF_DIR, register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=TINY)
    GlobalHydra.instance().clear()
    folder = tmp_path_factory.mktemp("run")
    experiments.run(cfg, folder)
    return folder


@pytest.mark.slow  # trains the run it evaluates (the module's fixture)
def test_evaluate_gives_the_runs_final_accuracy_in_eval_mode(run_dir, capsys):
    assert not load_trained_model(run_dir).training  # for inference: BatchNorm uses its running statistics
    assert main(["evaluate", str(run_dir)]) == 0
    record = json.loads((run_dir / "result.json").read_text())
    # the same weights on the same 16 validation images as the run's last epoch: the same accuracy
    assert f"accuracy {100 * record['metrics']['valid_acc']:.2f} % on 16 images (valid split of synthetic)" in capsys.readouterr().out
    assert main(["evaluate", str(run_dir), "data.n_valid=24"]) == 0
    assert "on 24 images" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["train.bs=3"], "'train.bs=3' is not a data setting; give dataset settings as data.KEY=VALUE"),
    (["data.n_valid=abc"], "data.n_valid=abc: Value 'abc' of type 'str' could not be converted to Integer"),
])
@pytest.mark.slow
def test_evaluate_refuses_a_bad_override_in_one_sentence(run_dir, capsys, args, message):
    assert main(["evaluate", str(run_dir), *args]) == 2
    assert message in capsys.readouterr().err


def test_evaluate_names_a_folder_without_a_run_or_weights(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert f"{tmp_path} has no result.json; pass a run folder" in capsys.readouterr().err
    (tmp_path / "result.json").write_text("{not json")
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "result.json: is not JSON" in capsys.readouterr().err
    # a failed run's record: no weights to load
    (tmp_path / "result.json").write_text(json.dumps({"config": {"stem": {"name": "resnet_7x7"}}, "status": "failed"}))
    assert main(["export", str(tmp_path)]) == 2
    assert "has no saved model (model.pt); train it with train.save_model=true" in capsys.readouterr().err


@pytest.mark.slow
def test_export_writes_a_program_that_runs_like_the_model(run_dir, tmp_path, capsys):
    out = tmp_path / "stem.pt2"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    assert f"wrote {out}: loaded back and run once" in capsys.readouterr().out
    program = torch.export.load(str(out)).module()
    x = torch.randn(3, 3, 16, 16)  # another batch size than the check's: the batch dimension is free
    with torch.no_grad():
        assert torch.allclose(program(x), load_trained_model(run_dir)(x), rtol=1e-4, atol=1e-5)


class RunsCode:
    """What a hostile model.pt holds: unpickling it would call Path.touch (any callable could be there)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_a_model_pt_that_would_run_code_is_refused_in_one_sentence(run_dir, tmp_path, capsys, command):
    hostile, marker = tmp_path / "run", tmp_path / "ran"
    hostile.mkdir()
    shutil.copy(run_dir / "result.json", hostile)
    torch.save({"stem.0.weight": RunsCode(marker)}, hostile / "model.pt")
    assert main([command, str(hostile)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {hostile / 'model.pt'} is not a plain weights file, so it was not loaded and nothing "
                          "in it ran (UnpicklingError: ") and err.count("\n") == 1
    assert err.endswith(f"); re-run the command that wrote {hostile}.\n")
    assert not marker.exists() and not (hostile / "model.pt2").exists()


@pytest.mark.slow
@pytest.mark.parametrize("out,message", [
    ("/", "--out / is a folder; give the program's file name, e.g. --out /model.pt2."),
    ("{tmp}", "--out {tmp} is a folder; give the program's file name, e.g. --out {tmp}/model.pt2."),
    ("{tmp}/a_file/x.pt2", "--out {tmp}/a_file/x.pt2: {tmp}/a_file is a file; give a file in an existing folder."),
    ("{tmp}/missing/x.pt2", "--out {tmp}/missing/x.pt2: {tmp}/missing does not exist; give a file in an existing folder."),
])
def test_an_export_out_that_cannot_be_the_program_file_is_one_sentence(run_dir, tmp_path, capsys, out, message):
    (tmp_path / "a_file").write_text("mine")
    assert main(["export", str(run_dir), "--out", out.format(tmp=tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {message.format(tmp=tmp_path)}\n"
    assert (tmp_path / "a_file").read_text() == "mine"
