"""Reports: one self-contained HTML page (and a Markdown twin) from a run or sweep folder.

A folder's sections come from ``report.json`` when it exists (written by ``mmdistill demo``:
an ordered list of ``{"title", "folder", "command", "intro"}``), otherwise from every folder
(the folder itself included) that holds something to read: a Markdown file (``summary.md``,
``analysis/modalities.md``), a PNG figure (``robustness/noise_*.png``), or the ``result.json``
of a ``distill()`` folder (shown as a table of its metrics). A section shows its Markdown files
(``summary.md`` first), its figures, and its CSV files: as tables where the section has no
Markdown of its own (``robustness/missing.csv``), else by name. In the HTML every figure is
embedded as a data URI, so the page needs nothing else.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import markdown

from ..engine.system.runfolder import read_marker
from ..errors import ConfigError
from ..io import write_text

TABLE_ROWS = 200  # a CSV shown as a table shows at most this many rows

STYLE = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
code{background:#f5f5f5;padding:0 .2em}section{border-top:2px solid #ddd;margin-top:2em}.cmd{color:#555}"""


@dataclass
class Section:
    title: str
    folder: Path
    command: str = ""
    intro: str = ""
    texts: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    csvs: list[Path] = field(default_factory=list)


def _fill(section: Section) -> Section:
    mds = sorted(section.folder.glob("*.md"), key=lambda p: (p.name != "summary.md", p.name))
    section.texts = [p for p in mds if p.name not in ("report.md",) and p.is_file()]  # no FIFO, no folder
    section.figures = sorted(p for p in section.folder.glob("*.png") if p.is_file())
    section.csvs = sorted(p for p in section.folder.glob("*.csv") if p.is_file())
    return section


def _is_distill_folder(folder: Path) -> bool:
    return (folder / "result.json").is_file() and (read_marker(folder) or {}).get("command") == "distill"


def _has_content(folder: Path) -> bool:
    shown = [p for p in [*folder.glob("*.md"), *folder.glob("*.png")] if p.name != "report.md" and p.is_file()]
    return bool(shown) or _is_distill_folder(folder)


def collect_sections(root: Path) -> list[Section]:
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"report: {root} is not a folder")
    index = root / "report.json"
    if index.is_file():
        entries = _report_index(index)
        return [
            _fill(Section(e["title"], root / e["folder"], e.get("command", ""), e.get("intro", ""))) for e in entries
        ]
    candidates = [root, *sorted(p for p in root.rglob("*") if p.is_dir() and not p.name.startswith("."))]
    folders = [f for f in candidates if _has_content(f)]
    if not folders:
        raise ConfigError(
            f"report: {root} holds no summary.md, figure or distill() result (not a run or sweep folder); give "
            f"a folder written by mmdistill train, demo, reproduce or salience, or the out_dir of a finished "
            f"distill(...) call"
        )
    return [_fill(Section(str(f.relative_to(root)) if f != root else root.name, f)) for f in folders]


def _text(path: Path) -> str:
    """A Markdown file's text; one that is not UTF-8 text is a ConfigError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"report: {path} is not UTF-8 text ({err.reason} at byte {err.start}); the file is damaged"
        ) from None


def _json(path: Path, what: str):
    try:
        return json.loads(path.read_bytes())
    except ValueError as err:  # not JSON, or not UTF-8
        raise ConfigError(f"report: {path} is not valid JSON ({str(err)[:100]}); expected {what}") from None


def _report_index(path: Path) -> list[dict]:
    """The sections a ``report.json`` lists: a JSON list of objects with string ``title`` and ``folder`` (and
    optionally ``command``, ``intro``)."""
    what = 'a list of {"title": ..., "folder": ..., "command": ..., "intro": ...} with string values'
    entries = _json(path, what)
    ok = isinstance(entries, list) and all(
        isinstance(e, dict)
        and isinstance(e.get("title"), str)
        and isinstance(e.get("folder"), str)
        and all(isinstance(e.get(k, ""), str) for k in ("command", "intro"))
        for e in entries
    )
    if not ok:
        raise ConfigError(f"report: {path} does not list the report's sections; expected {what}")
    return entries


def _distill_result(path: Path) -> dict:
    """A ``distill()`` folder's ``result.json``: an object whose ``val`` and ``test`` map metric names to numbers."""
    what = 'an object with "val" and "test": {metric: number}'
    result = _json(path, what)
    ok = isinstance(result, dict) and all(
        isinstance(result.get(split) or {}, dict)
        and all(isinstance(v, (int, float, type(None))) for v in (result.get(split) or {}).values())
        for split in ("val", "test")
    )
    if not ok:
        raise ConfigError(f"report: {path} is not distill()'s result; expected {what}")
    return result


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def csv_markdown(path: Path) -> str:
    """A CSV file as a Markdown table (its first :data:`TABLE_ROWS` rows), under its file name."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return f"`{path.name}`: empty"
    header, body = rows[0], rows[1:]
    cut = f" (the first {TABLE_ROWS} of {len(body)} rows)" if len(body) > TABLE_ROWS else ""
    return f"`{path.name}`{cut}:\n\n" + _markdown_table(header, body[:TABLE_ROWS])


def result_markdown(folder: Path) -> str:
    """The ``result.json`` of a ``distill()`` folder as a short summary: method, seed, epochs, metrics."""
    from ..tasks import DEFAULT_TASK, TASKS, stored_in_percent

    result = _distill_result(folder / "result.json")
    val, test = result.get("val") or {}, result.get("test") or {}
    task_name = result.get("task", DEFAULT_TASK)
    if not stored_in_percent(result) and task_name in TASKS:  # written by an older mmdistill, in fractions
        val, test = (TASKS.get(task_name)().for_people(m) for m in (val, test))
    names = list(dict.fromkeys([*test, *val]))
    rows = [[n, _number(val.get(n)), _number(test.get(n))] for n in names]
    facts = [f"method `{result.get('method', '?')}`", f"seed {result.get('seed', '?')}"]
    if result.get("epochs_run") is not None:
        facts.append(f"best epoch {result.get('best_epoch')} of {result['epochs_run']}")
    return "### distill() result\n\n" + ", ".join(facts) + "\n\n" + _markdown_table(["metric", "val", "test"], rows)


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


def _section_texts(s: Section) -> list[str]:
    """The Markdown a section shows: its files, else a distill() folder's result; CSV tables where no file speaks."""
    texts = [_demote(_text(t)) for t in s.texts]
    if not texts and _is_distill_folder(s.folder):
        texts.append(result_markdown(s.folder))
    if not s.texts:
        texts += [csv_markdown(c) for c in s.csvs]
    return texts


def render_markdown(root: Path, sections: list[Section], title: str) -> str:
    parts = [f"# {title}", ""]
    for s in sections:
        parts += [f"## {s.title}", ""]
        if s.intro:
            parts += [s.intro, ""]
        if s.command and not _states_command(s):
            parts += [f"Command: `{s.command}`", ""]
        for text in _section_texts(s):
            parts += [text, ""]
        for f in s.figures:
            parts += [f"![{f.stem}]({f.relative_to(root).as_posix()})", ""]
        if s.csvs:
            parts += ["Raw data: " + ", ".join(f"[{c.name}]({c.relative_to(root).as_posix()})" for c in s.csvs), ""]
    return "\n".join(parts)


def _states_command(s: Section) -> bool:
    """Whether a sub-report already says ``Command: `...``` for this section's command (MFH summaries do)."""
    return any(f"Command: `{s.command}`" in _text(t) for t in s.texts)


def _demote(text: str) -> str:
    """Sub-reports' headings go two levels down so the report's own outline stays on top."""
    return re.sub(r"^(#{1,4}) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", text, flags=re.M)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def render_html(root: Path, sections: list[Section], title: str) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        body.append(f"<section><h2>{html.escape(s.title)}</h2>")
        if s.intro:
            body.append(markdown.markdown(s.intro))
        if s.command and not _states_command(s):
            body.append(f"<p class='cmd'>Command: <code>{html.escape(s.command)}</code></p>")
        referenced = set()
        for text in _section_texts(s):
            for name in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text):
                referenced.add((s.folder / name).resolve())
                text = text.replace(f"({name})", f"({_data_uri(s.folder / name)})")
            body.append(markdown.markdown(text, extensions=["tables"]))
        for f in s.figures:
            if f.resolve() not in referenced:
                body.append(
                    f"<figure><img alt='{html.escape(f.stem)}' "
                    f"src='{_data_uri(f)}'><figcaption>{html.escape(f.name)}</figcaption></figure>"
                )
        if s.csvs:
            body.append(
                "<p>Raw data (next to this page): "
                + ", ".join(html.escape(str(c.relative_to(root))) for c in s.csvs)
                + "</p>"
            )
        body.append("</section>")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'>{REPORT_SIGNATURE_HTML}<title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )


REPORT_SIGNATURE_HTML = "<meta name='generator' content='mmdistill report'>"
REPORT_SIGNATURE_MD = "<!-- generator: mmdistill report -->"


def is_mmdistill_report(path: Path) -> bool:
    """True when ``path`` is a report file this module wrote (its generator line within the first 512 bytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512).decode("utf-8", errors="replace")
    except OSError:
        return False
    return REPORT_SIGNATURE_HTML in head or head.startswith(REPORT_SIGNATURE_MD)


def write_report(root: str | Path, title: str = "mmdistill report") -> tuple[Path, Path]:
    """Write ``root/report.html`` and ``root/report.md``; returns their paths."""
    root = Path(root)
    sections = collect_sections(root)
    md_path = write_text(root / "report.md", REPORT_SIGNATURE_MD + "\n" + render_markdown(root, sections, title))
    html_path = write_text(root / "report.html", render_html(root, sections, title))
    return html_path, md_path
