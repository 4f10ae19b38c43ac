"""A dataset plugin describes itself: its modalities, rows, task and where its data come from (``mmdistill data list``).

@DATASETS.register("my-data")
@dataset_card(modalities="rgb (3, H, W), depth (1, H, W)", rows="as listed in root/*.txt",
              task="segmentation", source="your folder (root)")
def my_data(seed: int = 0, root: str = "") -> ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

F = TypeVar("F", bound=Callable)


@dataclass(frozen=True)
class DatasetCard:
    """What ``mmdistill data list`` says about a dataset, in words (no data are read to say it)."""

    modalities: str
    rows: str
    task: str
    source: str

    def line(self) -> str:
        return f"{self.modalities}; {self.rows}; {self.task}; from {self.source}"


def dataset_card(modalities: str, rows: str, task: str, source: str) -> Callable[[F], F]:
    """Attach a :class:`DatasetCard` to a dataset builder (as its ``card`` attribute)."""

    def attach(builder: F) -> F:
        builder.card = DatasetCard(modalities, rows, task, source)  # type: ignore[attr-defined]
        return builder

    return attach


def card_line(builder: Callable) -> str:
    """One line about a registered builder: its card, or (a plugin without one) the first line of its docstring."""
    card = getattr(builder, "card", None)
    if isinstance(card, DatasetCard):
        return card.line()
    doc = (builder.__doc__ or "").strip().splitlines()
    return (doc[0] if doc else "no description") + " (no dataset_card: modalities, rows and task not stated)"
