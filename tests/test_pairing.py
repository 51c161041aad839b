"""Stems compared by construction: random streams by purpose (the same trunk, head and batches for every stem at a
seed), one format per study (decided once, reused, refused when contradicted), a split per seed, and a report that
says "paired" only when the records' digests agree and refuses to compare across formats."""
import json

import numpy as np
import pytest
import torch

from analyze import __main__ as cli
from experiments import streams
from experiments.data import build_data
from experiments.data.loader import TensorLoader
from experiments.model import build_model, trunk_digest
from experiments.schema import TRUNKS, stem_node
from experiments.study_format import FILE, StudyFormatError, study_format
from tests.conftest import TINY, run_cli
from tests.test_report import write_point

SMALL = {"name": "xresnet18", "layers": [1, 1, 1, 1], "widths": [8, 8, 16, 16], "expansion": 1}


def test_streams_are_keyed_by_seed_and_purpose_and_leave_the_global_stream_alone():
    seeds = {(s, p): streams.stream_seed(s, p) for s in range(3) for p in streams.PURPOSES}
    assert len(set(seeds.values())) == len(seeds) and all(0 <= v < 2 ** 63 for v in seeds.values())
    assert streams.stream_seed(1, "trunk") == streams.stream_seed(1, "trunk")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with streams.drawing(0, "trunk"):
        torch.rand(1000)
    assert torch.equal(torch.rand(3), expected)  # the stream outside is where it was
    with pytest.raises(ValueError, match="unknown random stream"):
        streams.stream_seed(0, "dropout")


def trunk_state(model):
    return {k: v for k, v in model.state_dict().items() if not k.startswith("stem.")}


def test_every_stem_at_a_seed_gets_the_same_trunk_and_head_whatever_was_drawn_before():
    torch.manual_seed(0)
    a = build_model(stem_node("resnet_7x7"), SMALL, 3, 10, seed=4)
    torch.rand(12345)  # a probe, a match or a calibration drawing from the global stream in between
    b = build_model(stem_node("deep_wide"), SMALL, 3, 10, seed=4)  # a stem drawing ~120k numbers of its own
    c = build_model(stem_node("resnet_7x7"), SMALL, 3, 10, seed=5)
    sa, sb, sc = trunk_state(a), trunk_state(b), trunk_state(c)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert trunk_digest(a) == trunk_digest(b) != trunk_digest(c)
    assert not torch.equal(sa["head.2.weight"], sc["head.2.weight"])
    # the stem's own weights: the same stem at the same seed is the same network
    again = build_model(stem_node("resnet_7x7"), SMALL, 3, 10, seed=4)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in a.state_dict().items())


def labels_in_order(loader):
    return torch.cat([y for _, y in loader])


def test_order_and_augmentation_are_separate_streams_and_the_digest_is_the_first_epochs_order():
    images, labels = torch.randint(0, 255, (40, 1, 8, 8), dtype=torch.uint8), torch.arange(40)
    common = dict(bs=8, shuffle=True, drop_last=False, seed=3, mean=(0.5,), std=(0.5,))
    crop = lambda x, gen: x if torch.rand(1, generator=gen).item() < 2 else x  # draws from the augment stream only
    plain, cropped = TensorLoader(images, labels, **common), TensorLoader(images, labels, crop=crop, **common)
    digest = plain.order_digest()
    assert torch.equal(labels_in_order(plain), labels_in_order(cropped))  # the crops' draws shift no order
    first = labels_in_order(TensorLoader(images, labels, **common))
    assert digest == streams.tensor_digest(first)  # labels are the rows here: the order visited
    assert TensorLoader(images, labels, **{**common, "seed": 4}).order_digest() != digest


def valid_rows(cfg, seed):
    data = build_data(cfg, bs=16, seed=seed)
    return data.valid.labels, data.info


def test_a_split_per_seed_is_shared_at_a_seed_differs_between_seeds_and_stays_stratified():
    per_seed = {"name": "mnist5k", "split_by_seed": True}
    y0, info = valid_rows(per_seed, 0)
    y0_again, _ = valid_rows(per_seed, 0)
    y1, _ = valid_rows(per_seed, 1)
    assert info["split"] == "per seed" and info["valid_source"] == "carved"
    assert torch.equal(y0, y0_again) and not torch.equal(y0, y1)
    assert np.array_equal(np.bincount(y0.numpy()), np.bincount(y1.numpy()))  # stratified: the same class counts
    fixed0, fixed_info = valid_rows({"name": "mnist5k"}, 0)
    fixed1, _ = valid_rows({"name": "mnist5k"}, 1)
    assert torch.equal(fixed0, fixed1) and fixed_info["split"] == "fixed"


class Train(dict):
    def __init__(self, precision="auto", channels_last="auto"):
        super().__init__(precision=precision, channels_last=channels_last)


def test_the_study_format_is_decided_once_reused_and_a_contradicting_setting_refused(tmp_path):
    calls = []

    def decide():
        calls.append(1)
        return {"precision": "bf16", "channels_last": True, "decided": {"how": "probe", "stem": "resnet_7x7"}}
    threads = torch.get_num_threads()
    try:
        first = study_format(tmp_path, Train(), decide)
        torch.set_num_threads(max(1, threads - 1) if threads > 1 else 2)
        again = study_format(tmp_path, Train(channels_last=True), decide)  # an explicit setting that agrees
        assert calls == [1] and first["precision"] == again["precision"] == "bf16"
        assert torch.get_num_threads() == first["threads"] == threads  # the study's thread count, restored
        with pytest.raises(StudyFormatError, match=r"train.precision=fp32 contradicts this sweep's format \(bf16, "
                                                   r"channels_last, .*study_format.json\)"):
            study_format(tmp_path, Train(precision="fp32"), decide)
        (tmp_path / FILE).write_text('{"precision": 1}')
        with pytest.raises(StudyFormatError, match="is damaged .*delete it to decide again"):
            study_format(tmp_path, Train(), decide)
    finally:
        torch.set_num_threads(threads)


def records(sweep):
    return [json.loads(p.read_text()) for p in sweep.rglob("result.json")]


@pytest.mark.slow
def test_a_sweep_with_the_default_format_trains_in_one_format_paired_by_seed(tmp_path):
    sweep = tmp_path / "sweep"
    tiny = [a for a in TINY if not a.startswith(("train.precision", "train.channels_last"))]  # the defaults: auto
    proc = run_cli("-m", *tiny, "stem=resnet_7x7,xresnet_3conv,patchify_4x4", "seed=0,1", "trunk.layers=[1,1,1,1]",
                   "trunk.widths=[8,8,16,16]", "hydra/launcher=basic", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = records(sweep)
    assert len(recs) == 6
    formats = {(r["hardware"]["precision"], r["hardware"]["channels_last"], r["hardware"]["threads"]) for r in recs}
    assert len(formats) == 1 and {r["hardware"]["decided"]["how"] for r in recs} == {"study"}
    assert json.loads((sweep / FILE).read_text())["decided"]["stem"] == "resnet_7x7"  # the reference's model decided
    for key in ("trunk_init", "data_order"):
        by_seed = {s: {r["pairing"][key] for r in recs if r["config"]["seed"] == s} for s in (0, 1)}
        assert len(by_seed[0]) == len(by_seed[1]) == 1 and by_seed[0] != by_seed[1]
    assert cli.main(["report", str(sweep), "--out", str(tmp_path / "report")]) == 0
    assert "Pairing: paired (trunk init and data order shared)" in (tmp_path / "report" / "report.md").read_text()


def with_record(folder, **fields):
    record = json.loads((folder / "result.json").read_text())
    for key, value in fields.items():
        record[key] = {**record.get(key, {}), **value} if isinstance(value, dict) else value
    (folder / "result.json").write_text(json.dumps(record))


def test_the_report_says_paired_only_when_the_digests_agree_and_names_the_runs_that_differ(tmp_path):
    for seed in range(3):
        for stem in ("resnet_7x7", "patchify_4x4"):
            d = write_point(tmp_path, stem, seed, 0.9 + seed / 100 + (stem == "resnet_7x7") / 50)
            init = f"t{seed}" if not (stem == "patchify_4x4" and seed == 1) else "other"
            with_record(d, pairing={"trunk_init": init, "data_order": f"o{seed}"},
                        data={"valid_split": "valid", "valid_source": "carved", "split": "per seed", "split_seed": 0})
    out = tmp_path / "report"
    assert cli.main(["report", str(tmp_path), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "Pairing: **not paired**; the stems' digests differ at seed 1, trunk init: " in text
    assert "patchify_4x4 (other)" in text and "resnet_7x7 (t1)" in text and "data order" not in text.split("Pairing")[1].split("\n")[0]
    assert "Validation data: a stratified split carved from the dataset, one per seed (`data.split_by_seed`)" in text


def test_a_study_of_mixed_formats_is_refused_in_one_sentence_before_anything_is_written(tmp_path, capsys):
    for seed in range(2):
        for stem in ("resnet_7x7", "dw_separable"):
            d = write_point(tmp_path / "sweep", stem, seed, 0.9)
            with_record(d, hardware={"precision": "fp32" if stem == "dw_separable" else "bf16", "channels_last": True,
                                     "threads": 1})
    out = tmp_path / "report"
    assert cli.main(["report", str(tmp_path / "sweep"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "trained in different formats (2 in precision bf16, channels_last True, threads 1" in err
    assert "2 in precision fp32" in err and "dw_separable" in err and not out.exists()
