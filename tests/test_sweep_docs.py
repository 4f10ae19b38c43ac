"""docs/sweeps.md's example is a valid sweep, and it tries what the page says it tries."""

from __future__ import annotations

import re
from pathlib import Path

from mmdistill.sweep import load_sweep
from mmdistill.sweep.plan import teacher_jobs

DOC = Path(__file__).resolve().parents[1] / "docs" / "sweeps.md"


def test_the_example_of_the_sweeps_page_is_valid_and_its_counts_hold(tmp_path):
    base, sweep = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)[:2]
    (tmp_path / "base.yaml").write_text(base)
    (tmp_path / "sweep.yaml").write_text(sweep)
    spec = load_sweep(tmp_path / "sweep.yaml")
    assert len(spec.grid("kd")) == 8 and len(spec.grid("dkd")) == 16  # "8 kd trials and 16 dkd trials"
    assert spec.tune_seeds == [0] and spec.final_seeds == [1, 2, 3]
    assert len(teacher_jobs(spec, tmp_path / "out")) == 4  # "the teacher of each seed once (seeds 0 to 3)"
