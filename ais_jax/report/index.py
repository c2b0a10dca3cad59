"""The run report: one self-contained ``index.html`` that shows a run's figures and tables.

A report is a list of :class:`Section` s, each holding :class:`Figure`, :class:`Table` and
:class:`Text` items. Every figure and table carries one sentence on how to read it; every file it
shows or links (PNG, CSV, JSON) is a path relative to the output folder and must exist when the
page is written, so a report never points at a missing file. No JavaScript, no external assets:
the page opens from disk on a machine without internet.

    index.write_index(out_dir, title='ais_jax run', intro=['...'], sections=[
        index.Section('Heatmaps', [index.Figure('figures/heatmaps.png', 'AIS heatmaps',
                                                'Red = where the maps that matter are active.')])])
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
import re
from typing import Any, Sequence, Union

INDEX_FILE = "index.html"


@dataclasses.dataclass(frozen=True)
class Figure:
  """A PNG (``path`` relative to the output folder) with a title and how to read it.

  ``data`` lists the files holding the numbers behind the figure (linked under it).
  """
  path: str
  title: str
  how_to_read: str
  data: Sequence[str] = ()
  width: str = "100%"


@dataclasses.dataclass(frozen=True)
class Table:
  """A table: ``header`` (column names) and ``rows`` (lists of cells; floats are formatted with
  ``digits`` significant digits, NaN/None shown as 'undefined')."""
  title: str
  header: Sequence[str]
  rows: Sequence[Sequence[Any]]
  how_to_read: str
  data: Sequence[str] = ()
  digits: int = 4
  collapsed: bool = False   # long tables: shown folded, opened by a click


@dataclasses.dataclass(frozen=True)
class Text:
  """Paragraphs of plain text (escaped), under an optional title."""
  paragraphs: Sequence[str]
  title: str = ""


@dataclasses.dataclass(frozen=True)
class Section:
  title: str
  items: Sequence[Union[Figure, Table, Text]]


def format_cell(value: Any, digits: int = 4) -> str:
  """A table cell as text: floats to ``digits`` significant digits, NaN/None -> 'undefined'."""
  if value is None:
    return "undefined"
  if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
    value = value.item()
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    if not math.isfinite(value):
      return "undefined"
    return f"{value:.{digits}g}"
  return str(value)


def _links(data: Sequence[str]) -> str:
  if not data:
    return ""
  base = [os.path.basename(p) for p in data]
  # A file name that occurs twice (three run folders' summary.json) is shown with its folder.
  shown = [p if base.count(b) > 1 else b for p, b in zip(data, base)]
  links = ", ".join(f'<a href="{html.escape(p, quote=True)}">{html.escape(s)}</a>'
                    for p, s in zip(data, shown))
  return f'<p class="data">Numbers behind it: {links}</p>'


def _render(item) -> str:
  if isinstance(item, Figure):
    src = html.escape(item.path, quote=True)
    return (f'<figure><h3>{html.escape(item.title)}</h3>'
            f'<p class="read"><b>How to read it:</b> {html.escape(item.how_to_read)}</p>'
            f'<a href="{src}"><img src="{src}" alt="{html.escape(item.title, quote=True)}" '
            f'style="max-width:{html.escape(item.width, quote=True)}"></a>{_links(item.data)}'
            '</figure>')
  if isinstance(item, Table):
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in item.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_cell(v, item.digits))}</td>"
                                    for v in row) + "</tr>" for row in item.rows)
    table = f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    if item.collapsed:
      table = (f'<details><summary>Show the {len(item.rows)} rows</summary>{table}</details>')
    return (f'<div class="table"><h3>{html.escape(item.title)}</h3>'
            f'<p class="read"><b>How to read it:</b> {html.escape(item.how_to_read)}</p>'
            f'{table}{_links(item.data)}</div>')
  if isinstance(item, Text):
    title = f"<h3>{html.escape(item.title)}</h3>" if item.title else ""
    return title + "".join(f"<p>{html.escape(p)}</p>" for p in item.paragraphs)
  raise TypeError(f"unknown report item {type(item).__name__}; use Figure, Table or Text")


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1150px;
margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
h3{font-size:1.05em;margin-bottom:.3em}p.read{margin:.2em 0 .5em;color:#333}
p.data{font-size:.85em;color:#555}figure{margin:0 0 1.5em}img{border:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.3em 0}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}.meta{font-size:.85em;color:#555}
nav a{margin-right:1em}summary{cursor:pointer;color:#225}
"""


def _anchor(title: str) -> str:
  return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


def referenced_files(items: Sequence[Union[Figure, Table, Text]]) -> list[str]:
  """Every file the items show or link, in order."""
  out = []
  for item in items:
    if isinstance(item, Figure):
      out.append(item.path)
    out += list(getattr(item, "data", ()))
  return out


def write_index(out_dir: str, *, title: str, sections: Sequence[Section],
                intro: Sequence[str] = (), footer: Sequence[str] = (),
                links: Sequence[tuple] = ()) -> str:
  """Writes ``out_dir/index.html``; returns its path.

  ``links``: ``(path, text)`` pages beside the report (e.g. the heatmap browser), listed first in
  the navigation bar; they are checked like every other referenced file.

  Raises:
    FileNotFoundError naming every referenced file that does not exist under ``out_dir`` (the
    page is not written then); ValueError for absolute or escaping paths.
  """
  all_items = [item for s in sections for item in s.items]
  missing = []
  for path in [p for p, _ in links] + referenced_files(all_items):
    if os.path.isabs(path) or os.path.normpath(path).startswith(".."):
      raise ValueError(f"report file {path!r} must be relative to the output folder {out_dir}")
    if not os.path.isfile(os.path.join(out_dir, path)):
      missing.append(path)
  if missing:
    raise FileNotFoundError(f"{out_dir}: the report references missing files: {', '.join(missing)}")
  nav = " ".join([f'<a class="page" href="{html.escape(p, quote=True)}"><b>{html.escape(t)}</b></a>'
                  for p, t in links]
                 + [f'<a href="#{_anchor(s.title)}">{html.escape(s.title)}</a>' for s in sections])
  parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
  parts += [f"<p>{html.escape(p)}</p>" for p in intro]
  parts.append(f"<nav>{nav}</nav>")
  for s in sections:
    parts.append(f'<section id="{_anchor(s.title)}"><h2>{html.escape(s.title)}</h2>')
    parts += [_render(item) for item in s.items]
    parts.append("</section>")
  if footer:
    parts.append('<hr><div class="meta">' + "".join(f"<p>{html.escape(p)}</p>" for p in footer)
                 + "</div>")
  parts.append("</body></html>\n")
  path = os.path.join(out_dir, INDEX_FILE)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write("\n".join(parts))
  os.replace(tmp, path)
  return path


def files_in_index(index_path: str) -> list[str]:
  """The ``src``/``href`` targets of a written index.html that are local files (for checks)."""
  with open(index_path, encoding="utf-8") as f:
    text = f.read()
  targets = re.findall(r'(?:src|href)="([^"#]+)"', text)
  return list(dict.fromkeys(html.unescape(t) for t in targets if "://" not in t))
