"""Per-run logs: a CSV of per-epoch metrics, TensorBoard event files, and a progress bar.

The progress bar is off when stderr is not a terminal or with ``quiet``. Only rank 0 logs.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from tqdm.auto import tqdm


class RunLogger:
    def __init__(self, out_dir: Path, total_epochs: int, quiet: bool = False, enabled: bool = True, desc: str = "train") -> None:
        self.enabled = enabled
        self.csv_path = out_dir / "metrics.csv"
        self.tb = None
        self.bar = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        show = not quiet and sys.stderr.isatty()
        self.bar = tqdm(total=total_epochs, desc=desc, unit="epoch", disable=not show, leave=False)

    def resume_at(self, epoch: int) -> None:
        """Drop CSV rows after ``epoch`` (written by a run that was killed before its checkpoint)."""
        if not self.enabled or not self.csv_path.is_file():
            return
        with open(self.csv_path) as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if int(r["epoch"]) <= epoch]
        self._write_rows(kept, list(rows[0].keys()) if rows else [])
        if self.bar is not None:
            self.bar.update(epoch)

    def _write_rows(self, rows: list[dict], fields: list[str]) -> None:
        with open(self.csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"epoch": epoch, **{k: f"{v:.6g}" for k, v in values.items()}}
        rows: list[dict] = []
        if self.csv_path.is_file():
            with open(self.csv_path) as f:
                rows = list(csv.DictReader(f))
        fields = list(dict.fromkeys([*(rows[0].keys() if rows else []), *row.keys()]))
        self._write_rows(rows + [row], fields)
        for k, v in values.items():
            self.tb.add_scalar(k, v, epoch)
        if self.bar is not None:
            shown = {k.split("/", 1)[1] if k.startswith("train/") else k: f"{v:.3g}" for k, v in values.items() if k.startswith(("train/", "val/accuracy"))}
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()
