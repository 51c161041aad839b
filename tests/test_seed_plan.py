"""Seeds chosen by power: the pooled SD and the seeds needed against hand values, the plan's floor and cap, the type
I error of variance-only re-estimation on simulated null studies, and a tiny tuned study that pilots, plans,
extends and keeps its plan when resumed."""
import json
import math
import sys
from pathlib import Path

import pytest

from experiments.seed_plan import FILE, SeedPlanError, make_plan, pooled_sd, saved_plan, seeds_needed
from tests.conftest import ROOT, TINY, run_cli

sys.path.insert(0, str(ROOT / "benchmarks"))
from seed_plan_type1 import null_studies  # noqa: E402


def test_pooled_sd_uses_each_comparisons_own_mean():
    sd, df = pooled_sd([[1.0, 2.0, 3.0], [2.0, 4.0], [7.0]])  # squares about the means: 2 and 2; df 2 + 1 (one seed: none)
    assert df == 3 and sd == pytest.approx(math.sqrt(4 / 3))
    assert pooled_sd([[5.0, 6.0, 7.0], [-5.0, -4.0, -3.0]])[0] == pytest.approx(1.0)  # shifting a comparison changes nothing
    with pytest.raises(SeedPlanError, match="set compare.pilot_seeds to 2 or more"):
        pooled_sd([[1.0], [2.0]])


def test_seeds_needed_match_the_paired_t_tables():
    # a one-sample t test, two-sided α 0.05, 80 % power: d = 1 needs 10 (power 0.803; 9 give 0.748), d = 2 needs 5
    assert seeds_needed(1.0, 1.0, 1) == 10 and seeds_needed(0.5, 1.0, 1) == 5
    assert seeds_needed(1.0, 1.0, 4) > 10  # Bonferroni over 4 comparisons asks for more
    assert seeds_needed(100.0, 1.0, 1, most=50) == 51  # beyond the search: reported as more than it


def test_the_plan_keeps_the_pilot_as_a_floor_and_the_cap_as_a_ceiling():
    tight = make_plan([[0.1, 0.2, 0.15], [0.0, 0.05, -0.05]], margin=1.0, pilot=3, cap=10)
    assert tight.needed is not None and tight.needed <= 3 and tight.seeds == 3 and tight.power > 0.99
    noisy = make_plan([[3.0, -2.0, 1.0], [0.0, 2.5, -3.0]], margin=1.0, pilot=3, cap=10)
    assert noisy.needed > 10 and noisy.seeds == 10 and noisy.power < 0.8
    assert "(capped) of at most 10" in noisy.text()
    flat = make_plan([[1.0, 1.0, 1.0]], margin=1.0, pilot=3, cap=10)
    assert flat.sd == 0 and flat.needed is None and flat.seeds == 3


def test_variance_only_re_estimation_keeps_the_type_i_error_near_nominal():
    rate, chosen = null_studies(2000, stems=1, sd=0.45, pilot=3, cap=10)
    assert 0.03 <= rate <= 0.07
    assert chosen.min() == 3 and chosen.max() == 10 and 3 < sorted(chosen)[1000] < 10  # the plans do vary


@pytest.mark.slow
def test_a_tuned_study_pilots_plans_extends_and_resumes_with_its_plan(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/sweeper=tuned", "hydra/launcher=basic", *TINY, "data.num_classes=2", "stem=resnet_7x7,patchify_4x4", "seed=range(4)",
            "hydra.sweeper.lrs=[0.004]", "hydra.sweeper.tune_seeds=[0]",
            "compare.seeds=auto", "compare.pilot_seeds=2", "compare.max_seeds=4", f"hydra.sweep.dir={sweep}"]
    proc = run_cli(*args, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = saved_plan(sweep)
    assert plan.pilot == 2 and plan.cap == 4 and 2 <= plan.seeds <= 4 and plan.comparisons == 1
    finals = sorted(p.parent.name for p in (sweep / "final").glob("*/result.json"))
    assert len(finals) == 2 * plan.seeds and all(f"seed={s}" in " ".join(finals) for s in range(plan.seeds))
    assert "Seeds by power: a pilot of 2 seeds per stem" in proc.stdout + proc.stderr
    saved = (sweep / FILE).read_text()
    again = run_cli(*args, cwd=tmp_path, timeout=900)
    assert again.returncode == 0 and (sweep / FILE).read_text() == saved
    assert (again.stdout + again.stderr).count("already completed") == 2 + 2 * plan.seeds
    report = tmp_path / "report"
    from analyze import __main__ as cli
    assert cli.main(["report", str(sweep), "--out", str(report)]) == 0
    text = (report / "report.md").read_text()
    assert plan.text() in text and "missing (asked for by the sweep" not in text


def test_a_plan_that_cannot_fit_the_seed_list_is_refused_before_anything_runs(tmp_path):
    proc = run_cli("-m", "hydra/sweeper=tuned", *TINY, "stem=resnet_7x7,patchify_4x4", "seed=0,1",
                   "compare.seeds=auto", "compare.max_seeds=5", f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "compare.seeds=auto with compare.max_seeds=5 needs at least 5 seeds in the sweep's seed list (it has 2); " \
           "sweep seed=range(5)." in proc.stderr
    assert not any((tmp_path / "s").rglob("result.json"))


def test_a_damaged_plan_is_named(tmp_path):
    (tmp_path / FILE).write_text(json.dumps({"pilot": 3}))
    with pytest.raises(SeedPlanError, match="is damaged .*delete it to plan again"):
        saved_plan(tmp_path)
