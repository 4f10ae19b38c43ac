"""A sweep touches the test split once, in its final runs: tuning trials (and the shared teachers) never read it."""

from __future__ import annotations

import json

import yaml
from test_sweep_file import BASE

from mmdistill.data import build_splits
from mmdistill.data.contracts.dataset import MultimodalDataset
from mmdistill.data.contracts.split import Splits
from mmdistill.sweep import plan, run_sweep

TEST_READABLE = [True]  # flipped by the test: False while the sweep tunes


class GuardedTest(MultimodalDataset):
    """A test split that raises when it is read while :data:`TEST_READABLE` says no."""

    def __getitems__(self, indices):
        if not TEST_READABLE[0]:
            raise RuntimeError("the test split was read while the sweep was tuning")
        return super().__getitems__(indices)


def guarded_toy(n: int = 120) -> Splits:
    """The toy two-modality data with a guarded test split (a ``data.dataset`` factory)."""
    splits = build_splits("toy-two-modality", {"n": n})
    test = splits.test
    guarded = GuardedTest(dict(test.tensors), test.labels, test.num_classes, "test")
    return Splits(splits.train, splits.val, guarded)


def test_tuning_trials_never_read_the_test_split_and_the_final_runs_do(tmp_path, monkeypatch):
    base = {**BASE, "data": {"dataset": "test_sweep_test_split:guarded_toy", "params": {"n": 120}}}
    sweep = {
        "base": "base.yaml",
        "methods": ["kd"],
        "space": {"method.params.temperature": [2]},
        "search": {"kind": "grid"},
        "seeds": {"tune": 1, "final": 1},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    real_final_jobs = plan.final_jobs

    def final_jobs(*args, **kwargs):
        TEST_READABLE[0] = True  # tuning is over: the final runs evaluate the test split
        return real_final_jobs(*args, **kwargs)

    monkeypatch.setattr(plan, "final_jobs", final_jobs)
    TEST_READABLE[0] = False
    try:
        out = tmp_path / "sweep"
        result = run_sweep(tmp_path / "sweep.yaml", out, quiet=True)
    finally:
        TEST_READABLE[0] = True
    assert [r["status"] for r in result["trials"]] == ["done"], [r.get("error") for r in result["trials"]]
    for trial in (out / "trials").iterdir():
        run = json.loads((trial / "s0" / "seed_0" / "student" / "result.json").read_text())
        assert run["test"] == {} and run["val"]  # chosen on validation; no test metrics in a trial folder
        assert "not evaluated" in (trial / "s0" / "summary.md").read_text()
    final = json.loads((out / "final" / "kd-tuned" / "trial.json").read_text())
    assert final["status"] == "done" and final["test"]["1"]["accuracy"] >= 0
