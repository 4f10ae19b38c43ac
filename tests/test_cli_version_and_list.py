"""``mmdistill --version`` and ``mmdistill data list``: one line per dataset, told by the dataset plugin itself."""

import re

from mmdistill import __version__
from mmdistill.cli import main
from mmdistill.registry import DATASETS


def test_version_prints_the_package_version_and_exits_0(capsys):
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert re.match(rf"mmdistill {re.escape(__version__)} \(torch \S+, Python \d+\.\d+", out)


def test_data_list_gives_one_line_per_dataset_with_modalities_rows_task_and_source(capsys):
    assert main(["data", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = DATASETS.names()
    assert [line.split()[0] for line in lines] == names
    for line, name in zip(lines, names):
        card = DATASETS.get(name).card  # each built-in describes itself
        for field in (card.modalities, card.rows, card.task, card.source):
            assert field in line, f"{name}: {field!r} missing from {line!r}"
    toy = next(line for line in lines if line.startswith("toy-two-modality "))
    assert "a[16]" in toy and "1,200" in toy and "classification" in toy


def test_a_dataset_registered_from_outside_describes_itself_in_data_list(capsys):
    from mmdistill.data.contracts.card import dataset_card

    @DATASETS.register("cli-list-own-dataset")
    @dataset_card(modalities="ecg (1, 500)", rows="12 rows", task="regression", source="my lab's recorder")
    def own(seed: int = 0):
        """My own data."""

    try:
        assert main(["data", "list"]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("cli-list-own-dataset"))
        assert "ecg (1, 500)" in line and "12 rows" in line and "regression" in line and "my lab's recorder" in line
    finally:
        DATASETS._entries.pop("cli-list-own-dataset", None)
