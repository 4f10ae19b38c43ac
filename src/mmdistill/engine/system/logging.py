"""Per-run logs: a CSV of per-epoch metrics, TensorBoard event files, and a progress bar.

``metrics.csv`` is append-only: one fsynced row per epoch (a kill loses at most the row being
written, never the history); rows past a resumed checkpoint are dropped by an atomic rewrite.

On a terminal progress is a tqdm bar; when stderr is not a terminal (nohup, a cluster scheduler,
``2> log.txt``) it is one line per epoch instead, e.g.
``seed 0 student: epoch 3/15 loss 0.412 val accuracy 81.20 (1.3 s)``. ``quiet`` silences both. Percent metrics are
logged in percent everywhere (the CSV, TensorBoard, the bar and the line).
Only rank 0 logs (under DDP the other ranks are constructed with ``enabled=False``).
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from ...io import write_text

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

SHOWN = ("val/accuracy", "val/f1_micro", "val/mae", "val/miou")  # the progress bar's validation metric, per task


def percent_metrics() -> frozenset[str]:
    """The metrics a registered task marks as percent (``MetricSpec.percent``): logged x 100."""
    from ...tasks import TASKS

    return frozenset(k for name in TASKS.names() for k, spec in TASKS.get(name).metric_specs.items() if spec.percent)


class RunLogger:
    def __init__(
        self, out_dir: Path, total_epochs: int, quiet: bool = False, enabled: bool = True, desc: str = "train"
    ) -> None:
        self.enabled = enabled
        self.csv_path = out_dir / "metrics.csv"
        self.tb: SummaryWriter | None = None
        self.bar = None
        self.desc = desc
        self.total_epochs = total_epochs
        self.log_lines = False
        self._last_time = time.perf_counter()
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self._tb_dir = out_dir / "tensorboard"  # the writer is made at the first log (its import costs ~1 s)
        is_tty = sys.stderr.isatty()
        show = not quiet and is_tty
        self.log_lines = not quiet and not is_tty
        self.bar = tqdm(total=total_epochs, desc=desc, unit="epoch", disable=not show, leave=False)

    def resume_at(self, epoch: int) -> None:
        """Drop CSV rows after ``epoch`` (written by a run that was killed before its checkpoint), atomically."""
        if not self.enabled:
            return
        fields, rows = self._read()
        kept = [r for r in rows if int(r["epoch"]) <= epoch]
        if self.csv_path.is_file() and (len(kept) != len(rows) or not self._ends_complete()):
            self._rewrite(kept, fields)
        if self.bar is not None:
            self.bar.update(epoch)
        self._last_time = time.perf_counter()

    def _ends_complete(self) -> bool:
        """Whether the file ends with a newline (a kill during an append leaves half a line)."""
        with open(self.csv_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def _read(self) -> tuple[list[str], list[dict]]:
        """(header, complete rows) of the CSV; a trailing partial line is left out."""
        if not self.csv_path.is_file():
            return [], []
        text = self.csv_path.read_text()
        complete = text[: text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(complete))
        rows = list(reader)
        return list(reader.fieldnames or []), rows

    def _rewrite(self, rows: list[dict], fields: list[str]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        write_text(self.csv_path, buf.getvalue())

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        """Append this epoch's row (fsynced); the file is rewritten atomically only when columns change. Every log
        (the row, TensorBoard, the bar, the line) gives the tasks' percent metrics in percent (0.5733 -> 57.33)."""
        if not self.enabled:
            return
        percent = percent_metrics()
        values = {k: 100.0 * v if k.startswith("val/") and k[4:] in percent else v for k, v in values.items()}
        row = {"epoch": epoch, **{k: f"{v:.6g}" for k, v in values.items()}}
        if self.csv_path.is_file() and self._ends_complete():
            with open(self.csv_path) as f:
                header = next(csv.reader([f.readline().rstrip("\r\n")]), [])
            if header == list(row):
                buf = io.StringIO()
                csv.DictWriter(buf, fieldnames=header, lineterminator="\n").writerow(row)
                with open(self.csv_path, "a") as f:
                    f.write(buf.getvalue())
                    f.flush()
                    os.fsync(f.fileno())
                self._log_rest(epoch, values)
                return
        fields, rows = self._read()
        self._rewrite(rows + [row], list(dict.fromkeys([*fields, *row])))
        self._log_rest(epoch, values)

    def _log_rest(self, epoch: int, values: dict[str, float]) -> None:
        if self.tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self._tb_dir))
        for k, v in values.items():
            self.tb.add_scalar(k, v, epoch)
        if self.bar is not None:
            shown = {
                k.split("/", 1)[1] if k.startswith("train/") else k: f"{v:.3g}"
                for k, v in values.items()
                if k.startswith(("train/", *SHOWN))
            }
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)
        if self.log_lines:
            self._print_line(epoch, values)

    def _print_line(self, epoch: int, values: dict[str, float]) -> None:
        """One progress line to stderr (for batch-job logs), flushed so it shows up while the job runs."""
        now = time.perf_counter()
        seconds, self._last_time = now - self._last_time, now
        parts = [f"{self.desc}: epoch {epoch}/{self.total_epochs}"]
        if "train/loss" in values:
            parts.append(f"loss {values['train/loss']:.3f}")
        for k, v in values.items():
            if k.startswith("val/"):
                name = k.split("/", 1)[1]
                shown = f"{v:.2f}" if name in percent_metrics() else f"{v:.4g}"
                parts.append(f"val {name} {shown}")
        print(" ".join(parts) + f" ({seconds:.1f} s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.bar is not None:
            self.bar.close()
