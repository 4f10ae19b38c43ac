"""Reports: one self-contained HTML page (and a Markdown twin) from a run or sweep folder.

A folder's sections come from ``report.json`` when it exists (written by ``mmdistill demo``:
an ordered list of ``{"title", "folder", "command", "intro"}``), otherwise from every
sub-folder (the folder itself included) that holds a ``summary.md``. A section shows its
Markdown files (``summary.md`` first), its PNG figures and the names of its CSV files; in the
HTML every figure is embedded as a data URI, so the page needs nothing else.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import markdown

from ..errors import ConfigError
from ..io import write_text

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
    section.texts = [p for p in mds if p.name not in ("report.md",)]
    section.figures = sorted(section.folder.glob("*.png"))
    section.csvs = sorted(section.folder.glob("*.csv"))
    return section


def collect_sections(root: Path) -> list[Section]:
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"report: {root} is not a folder")
    index = root / "report.json"
    if index.is_file():
        entries = json.loads(index.read_text())
        return [
            _fill(Section(e["title"], root / e["folder"], e.get("command", ""), e.get("intro", ""))) for e in entries
        ]
    folders = sorted({p.parent for p in root.rglob("summary.md")})
    if not folders:
        raise ConfigError(f"report: {root} holds no summary.md (not a run or sweep folder)")
    return [_fill(Section(str(f.relative_to(root)) if f != root else root.name, f)) for f in folders]


def render_markdown(root: Path, sections: list[Section], title: str) -> str:
    parts = [f"# {title}", ""]
    for s in sections:
        parts += [f"## {s.title}", ""]
        if s.intro:
            parts += [s.intro, ""]
        if s.command and not _states_command(s):
            parts += [f"Command: `{s.command}`", ""]
        for t in s.texts:
            parts += [_demote(t.read_text()), ""]
        for f in s.figures:
            parts += [f"![{f.stem}]({f.relative_to(root).as_posix()})", ""]
        if s.csvs:
            parts += ["Raw data: " + ", ".join(f"[{c.name}]({c.relative_to(root).as_posix()})" for c in s.csvs), ""]
    return "\n".join(parts)


def _states_command(s: Section) -> bool:
    """Whether a sub-report already says ``Command: `...``` for this section's command (MFH summaries do)."""
    return any(f"Command: `{s.command}`" in t.read_text() for t in s.texts)


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
        for t in s.texts:
            text = _demote(t.read_text())
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
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )


def write_report(root: str | Path, title: str = "mmdistill report") -> tuple[Path, Path]:
    """Write ``root/report.html`` and ``root/report.md``; returns their paths."""
    root = Path(root)
    sections = collect_sections(root)
    md_path = write_text(root / "report.md", render_markdown(root, sections, title))
    html_path = write_text(root / "report.html", render_html(root, sections, title))
    return html_path, md_path
