"""The report's Scope paragraph: its figures (runs, wall time, epochs, image size, device) against hand values from
the records, a setting that differs between a study's runs named as varying, and the smallest detectable difference
the same number as the Power line's."""
import json

from analyze import __main__ as cli
from analyze.report import comparison, statistics
from analyze.report.data import read_records
from analyze.report.readme import study_summary
from analyze.report.render import power_line
from analyze.report.scope import HEADING, detect_text, scope_lines
from analyze.report.studies import split_studies
from tests.test_report import ACC, write_point

CPU = {"cpu": "Test CPU", "cpu_count": 4, "torch": "2.x", "git_commit": "a" * 40}
FORMAT = {"device": "cpu", "precision": "fp32", "channels_last": False, "threads": 2}


def complete(folder, wall_s, environment=CPU, hardware=FORMAT, image_size=28, **data):
    """write_point's record with what a real run records beside it: wall time, device, format, data and model."""
    path = folder / "result.json"
    record = json.loads(path.read_text())
    record.update(wall_s=wall_s, environment=dict(environment), hardware=dict(hardware),
                  data={"name": "mnist5k", "valid_split": "valid", "n_train": 400, "n_valid": 100, "split": "per seed",
                        "split_seed": 0, "valid_source": "carved", **data},
                  model={"stem": {"name": record["config"]["stem"]["name"]}, "in_channels": 1, "num_classes": 10,
                         "image_size": image_size})
    record["config"]["train"].update(wd=0.01, label_smoothing=0.0)
    path.write_text(json.dumps(record))


def the_scope(root):
    (study,) = split_studies(read_records(root).runs)
    pw = comparison.power(statistics.stem_table(study))
    return study, pw, "\n".join(scope_lines(study, detect_text(pw)))


def three_stems(root, walls, **kw):
    """ACC's 3 stems × 3 seeds; run i (in stem, seed order) took walls[i] seconds."""
    points = [(stem, seed, acc) for stem, accs in ACC.items() for seed, acc in enumerate(accs)]
    for (stem, seed, acc), wall in zip(points, walls):
        complete(write_point(root, stem, seed, acc), wall, **kw)


def test_the_budget_is_read_from_the_records(tmp_path):
    walls = [10, 20, 30, 40, 50, 60, 70, 80, 90]  # 450 s = 7.5 min
    three_stems(tmp_path, walls)
    study, pw, text = the_scope(tmp_path)
    assert text.startswith(HEADING)
    assert ("- budget: mnist5k at 28 px, 2 epochs at batch 64, trunk xresnet18; 9 runs (3 stems, 3 seeds); 7.5 min of "
            "wall time summed over its 9 runs, on CPU (Test CPU, 4 logical cores).") in text
    assert "format: precision fp32, channels_last False, threads 2" in text and "peak LR: 0.001" in text
    assert "optimizer: fastai fit_one_cycle with torch's AdamW (wd 0.01, label_smoothing 0.0)" in text
    assert "augmentation: none" in text and "data: 400 training / 100 carved validation images, one split per seed" in text
    assert "- varies: the stem (3); the seed (3 seeds, 0–2).\n" in text  # nothing else differs between the runs
    assert ("- cannot show: rankings at convergence (after 2 epochs a ranking may measure early training speed); at image "
            "sizes other than 28 px; with trunks other than xresnet18; on datasets other than mnist5k; at learning rates "
            "other than 0.001") in text
    # the smallest detectable difference: the Power line's number, in both texts
    detectable = f"**{100 * pw.detectable:.2f} points**"
    assert f"- smallest difference it could detect: {detectable} at 80 % power" in text and detectable in power_line(pw)


def test_a_setting_that_differs_between_runs_is_named_as_varying(tmp_path):
    three_stems(tmp_path, [60] * 8, hardware=FORMAT)
    # the ninth run: on a GPU, another torch and commit, and a larger training set
    gpu = {**CPU, "gpu": "Fake GPU", "torch": "2.y", "git_commit": "b" * 40}
    complete(write_point(tmp_path, "dw_separable", 2, 0.51), 120, environment=gpu, hardware={**FORMAT, "device": "cuda"},
             n_train=500)
    _, _, text = the_scope(tmp_path)
    assert "10.0 min of wall time summed over its 9 runs, on CPU (Test CPU, 4 logical cores) or GPU (Fake GPU)." in text
    varies = next(line for line in text.splitlines() if line.startswith("- varies:"))
    assert "**device**: CPU (Test CPU, 4 logical cores) (8 runs); GPU (Fake GPU) (1 run)" in varies
    assert "**torch**: 2.x (8 runs); 2.y (1 run)" in varies and f"**code commit**: {'a' * 12} (8 runs); {'b' * 12} (1 run)" in varies
    assert "**data**: 400 training / 100 carved validation images, one split per seed (8 runs); 500 training" in varies
    held = next(line for line in text.splitlines() if line.startswith("- held fixed:"))
    assert "device" not in held and "data:" not in held and "epochs" in held  # what varies is not called fixed


def test_a_tuned_study_counts_its_tuning_runs_and_tunes_the_lr(tmp_path):
    for stem in ("resnet_7x7", "patchify_4x4"):
        for lr in (1e-3, 1e-2):
            for seed in range(2):  # tuning runs: 30 s each, on the tuning split (another data description)
                complete(write_point(tmp_path, stem, seed, 0.8, lr=lr, tune=True), 30, valid_split="tune", n_train=360,
                         n_valid=40)
        for seed in range(3):
            complete(write_point(tmp_path, stem, seed, 0.9 + seed / 100, lr=1e-2, tune=False), 90)
    _, _, text = the_scope(tmp_path)
    # 8 × 30 s + 6 × 90 s = 780 s = 13.0 min
    assert "6 final runs (2 stems, 3 seeds) and 8 tuning runs; 13.0 min of wall time summed over its 14 runs" in text
    assert "the LR, tuned per stem (the details table)" in text and "peak LR" not in text and "learning rates" not in text
    assert "**data**" not in text  # the tuning stage's split differs by design: the final runs' data is held fixed


def test_the_image_size_is_the_stems_and_a_recorded_augmentation_is_named(tmp_path):
    crop = "RandomResizedCropFlip(size=64, min_scale=0.35)"
    for seed in range(3):
        for stem in ("resnet_7x7", "patchify_4x4"):
            complete(write_point(tmp_path, stem, seed, 0.6 + seed / 100), 10, image_size=64, source_px=160, augment=crop)
    _, _, text = the_scope(tmp_path)
    assert "mnist5k at 64 px (from 160-px source images)" in text and "at image sizes other than 64 px;" in text
    assert f"augmentation: {crop}" in text


def test_one_seed_holds_the_seed_fixed_and_the_power_is_unknown(tmp_path):
    for stem in ("resnet_7x7", "patchify_4x4"):
        complete(write_point(tmp_path, stem, 0, 0.8), 10)
    _, pw, text = the_scope(tmp_path)
    assert pw is None and "; seed: 0." in text and "- varies: the stem (2).\n" in text
    assert "- smallest difference it could detect: unknown, as no stem was tested against the reference" in text


def test_the_report_opens_each_study_with_its_scope_and_the_readme_copies_it(tmp_path):
    three_stems(tmp_path / "sweep", [10] * 9)
    out = tmp_path / "report"
    assert cli.main(["report", str(tmp_path / "sweep"), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    section = text.split("\n## ")[1]
    assert section.count(HEADING) == 1 and section.index(HEADING) < section.index("| stem |") < section.index("Power: ")
    assert "Each study opens with its **Scope**" in text.split("\n## ")[0]
    summary = "\n".join(study_summary(out / "report.md"))
    scope = section[section.index(HEADING):].split("\n\n")[0]
    assert scope in summary and summary.index("Reference: ") < summary.index(HEADING) < summary.index("| stem |")


def test_runs_without_a_wall_time_are_counted_apart(tmp_path):
    three_stems(tmp_path, [60] * 9)
    path = next(tmp_path.rglob("result.json"))
    record = json.loads(path.read_text())
    record.pop("wall_s")
    path.write_text(json.dumps(record))
    _, _, text = the_scope(tmp_path)
    assert "8.0 min of wall time summed over the 8 of 9 runs that recorded it" in text


def test_the_design_space_study_states_its_scope_and_its_dkw_band():
    from analyze.report.data import Run
    from analyze.report.space import space_scope
    from stems.space import point_of

    runs = []
    for i, (name, wall) in enumerate((("xresnet_3conv", 60), ("space_to_depth", 120), ("patchify_4x4", 180))):
        config = {"stem": {"name": "space", "out_channels": 64, "match": None, **point_of(name)}, "seed": 0,
                  "trunk": {"name": "xresnet18"}, "data": {"name": "mnist5k"}, "train": {"epochs": 1, "bs": 32, "lr": 0.004}}
        runs.append(Run(f"run{i}", {"status": "completed", "config": config, "wall_s": wall, "environment": CPU,
                                    "hardware": FORMAT, "model": {"image_size": 28}}))
    text = "\n".join(space_scope(runs, 3))
    # 60 + 120 + 180 s = 6.0 min; the DKW band at n = 3: sqrt(ln(2 / 0.05) / 6) = 0.784
    assert "1 epoch at batch 32" in text and "(after 1 epoch a ranking" in text and "3 runs (3 stems, 1 seed); 6.0 min of wall time summed over its 3 runs" in text
    assert "; seed: 0." in text and "- varies: the stem (3).\n" in text
    assert "none between two stems (each trained once" in text and "closer than ±0.78 of the share of stems" in text
