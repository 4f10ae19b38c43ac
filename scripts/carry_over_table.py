"""Print the table of which method carries over to which task, from the registries; ``--write`` puts it into
docs/methods.md and docs/tasks.md in place of the table between its marker lines (tests/test_method_contract.py
checks that both docs hold it)."""

from __future__ import annotations

import sys
from pathlib import Path

from mmdistill.methods.carry_over import carry_over_table, table_in

DOCS = [Path(__file__).resolve().parents[1] / "docs" / name for name in ("methods.md", "tasks.md")]


def main(argv: list[str]) -> int:
    table = carry_over_table()
    if "--write" not in argv:
        print(table)
        return 0
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        old = table_in(text)
        if old is None:
            print(f"{doc}: no carry-over table markers; add the table by hand once", file=sys.stderr)
            return 1
        doc.write_text(text.replace(old, table), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
