"""Per-run logs: a CSV of per-epoch metrics, TensorBoard event files, and a progress bar.

``metrics.csv`` is append-only: one fsynced row per epoch (a kill loses at most the row being
written, never the history); rows past a resumed checkpoint are dropped by an atomic rewrite.

The progress bar is off when stderr is not a terminal or with ``quiet``. Only rank 0 logs.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path

from tqdm.auto import tqdm

from ..io import write_text


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
        """Drop CSV rows after ``epoch`` (written by a run that was killed before its checkpoint), atomically."""
        if not self.enabled:
            return
        fields, rows = self._read()
        kept = [r for r in rows if int(r["epoch"]) <= epoch]
        if self.csv_path.is_file() and (len(kept) != len(rows) or not self._ends_complete()):
            self._rewrite(kept, fields)
        if self.bar is not None:
            self.bar.update(epoch)

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
        """Append this epoch's row (fsynced); the file is rewritten atomically only when columns change."""
        if not self.enabled:
            return
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
