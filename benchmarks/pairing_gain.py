"""What pairing buys a study: the variance of the paired differences (stem − reference at the same seed) over the
variance of unpaired ones (the sum of the two stems' variances over seeds), pooled over the comparisons with the
reference. 1 means pairing bought nothing; 0.81 means it removed 19 % of the variance. Also the median correlation
between a stem's and the reference's accuracies across seeds.

    python benchmarks/pairing_gain.py docs/studies/stem_study_mnist5k_tuned/records"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analyze.report.data import read_records  # noqa: E402
from analyze.report.statistics import accuracy_by_stem, reference_of, stem_table  # noqa: E402
from analyze.report.studies import split_studies  # noqa: E402


def gain(study) -> tuple[float, float, int]:
    """(paired / unpaired variance ratio, median correlation, comparisons) of one study's final stage."""
    acc = accuracy_by_stem(study)
    reference = reference_of(study, stem_table(study))[0]
    paired = unpaired = 0.0
    correlations = []
    for stem, by_seed in acc.items():
        seeds = sorted(set(by_seed) & set(acc[reference]), key=str)
        if stem == reference or len(seeds) < 3:
            continue
        a, r = (np.array([d[s] for s in seeds]) * 100 for d in (by_seed, acc[reference]))
        paired += (len(seeds) - 1) * np.var(a - r, ddof=1)
        unpaired += (len(seeds) - 1) * (np.var(a, ddof=1) + np.var(r, ddof=1))
        correlations.append(np.corrcoef(a, r)[0, 1])
    return paired / unpaired, float(np.median(correlations)), len(correlations)


def main() -> None:
    for study in split_studies(read_records(Path(sys.argv[1])).runs):
        ratio, corr, m = gain(study)
        print(f"{study.label}: paired/unpaired variance {ratio:.2f} over {m} comparisons; median correlation "
              f"stem vs reference across seeds {corr:+.2f}")


if __name__ == "__main__":
    main()
