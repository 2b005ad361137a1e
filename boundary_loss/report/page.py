"""The report page: a list of blocks rendered both as Markdown and as HTML, so both say the same.

report.py builds the table and the description of its cells (`report.summary.build_table`); this
module lays them out with the plots and each run's provenance (folder, epochs, commit, working tree,
command line, packages, git.diff, training arguments), and renders the page: GitHub-flavoured
Markdown (pipe tables, special characters escaped) or a standalone HTML file (inline style,
escaped text, no external resource but the plots).
"""

from __future__ import annotations

import datetime
import html
import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from boundary_loss.io.atomic import write_text_atomic
from boundary_loss.report.runs import RunSummary


@dataclass(frozen=True)
class Table:
    """The report table: a header, one row of cells per run, and which cells are the best.

    Attributes:
        header: C column titles.
        rows: R x C cells, one row per run.
        bold: R x C flags, True for the best value of a metric column.
    """

    header: list[str]
    rows: list[list[str]]
    bold: list[list[bool]]


@dataclass(frozen=True)
class Block:
    """One element of the page.

    Attributes:
        kind: "h1" | "h2" | "h3" | "p" | "table" | "img" | "items" | "code".
        text: heading, paragraph or code text, or the image caption.
        path: image path relative to the page.
        items: (label, value, as_code) triples for "items".
        table: the Table for "table".
    """

    kind: str
    text: str = ""
    path: str = ""
    items: tuple[tuple[str, str, bool], ...] = ()
    table: Table | None = None


def provenance_items(run: RunSummary) -> list[tuple[str, str, bool]]:
    """What the page says about where a run's numbers come from.

    Args:
        run: one run of `report.runs.summarise`.

    Returns:
        (label, value, as_code) triples: folder, epochs, the checkpoint's epoch, commit, working
        tree, seed, device, Python, date, command line, packages, git.diff, and the notes on
        missing or unreadable side files; a diverged run, or one whose 3D metrics are NaN from
        some epoch on, says so after its epochs.
    """
    items: list[tuple[str, str, bool]] = [("folder", str(run.folder), True)]
    items.append(("epochs done / planned", run.epochs_text, False))
    if run.divergence is not None and run.divergence.nan_from is not None:
        status = "diverged" if run.diverged else f"NaN from epoch {run.divergence.nan_from}"
        items.append((status, run.divergence.describe(), False))
    if run.checkpoint_epoch is not None:
        items.append(
            ("best epoch of the checkpoint (best_epoch.txt)", str(run.checkpoint_epoch), False)
        )
    prov = run.provenance
    if prov is not None:
        commit = str(prov.get("commit", "unknown"))
        dirty = prov.get("dirty")
        state = {True: "dirty (uncommitted changes)", False: "clean"}.get(dirty, "unknown")
        items.append(("commit", commit, True))
        items.append(("working tree", state, False))
        command = prov.get("command")
        if isinstance(command, list):
            command = shlex.join(str(c) for c in command)
        for key in ("seed", "device", "cuda", "python", "platform", "date"):
            if prov.get(key) is not None:
                items.append((key, str(prov[key]), False))
        if command is not None:
            items.append(("command", str(command), True))
        packages = prov.get("packages")
        if isinstance(packages, dict) and packages:
            text = ", ".join(f"{k}=={v}" for k, v in sorted(packages.items()))
            items.append(("packages", text, True))
    if run.diff_lines is not None:
        text = "empty" if run.diff_lines == 0 else f"{run.diff_lines} lines"
        items.append(("git.diff", text, False))
    for note in run.notes:
        items.append(("note", note, False))
    return items


def divergence_blocks(runs: Sequence[RunSummary]) -> list[Block]:
    """The section naming the diverged runs, and the runs whose 3D metrics are NaN from some
    epoch on (`runfolder.schema.Divergence`); nothing when there is none.

    Args:
        runs: output of `report.runs.summarise`.

    Returns:
        A "Diverged runs" heading and one paragraph per run, or no block.
    """
    found = [r for r in runs if r.divergence is not None and r.divergence.nan_from is not None]
    if not found:
        return []
    blocks = [Block("h2", "Diverged runs")]
    for run in found:
        assert run.divergence is not None  # filtered above
        what = (
            "left out of the ranking (its row below says diverged), the seeds' aggregation and "
            "the comparisons"
            if run.diverged
            else "still ranked, on those epochs"
        )
        blocks.append(Block("p", f"{run.label}: {run.divergence.describe()}; {what}."))
    return blocks


def build_page(
    runs: Sequence[RunSummary],
    title: str,
    plots: Sequence[str | Path],
    page_dir: str | Path,
    description: str,
    table: Table,
    extra: Sequence[Block] = (),
) -> list[Block]:
    """The report page as blocks.

    Args:
        runs: output of `report.runs.summarise`.
        title: page title.
        plots: image files to embed, shown by their path relative to `page_dir`.
        page_dir: the folder the page is written to.
        description: the paragraph saying what the table cells are (`report.summary.describe`).
        table: the table of the runs (`report.summary.build_table`).
        extra: blocks placed after the table (the predictions' section).

    Returns:
        The blocks, in page order.
    """
    blocks = [Block("h1", title)]
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    blocks.append(Block("p", f"Generated {date}."))
    blocks.append(Block("p", description))
    unfinished = [r.label for r in runs if r.unfinished]
    if unfinished:
        blocks.append(
            Block("p", f"Unfinished runs (fewer epochs than planned): {', '.join(unfinished)}.")
        )
    blocks.extend(divergence_blocks(runs))
    blocks.append(Block("table", table=table))
    blocks.extend(extra)
    if plots:
        blocks.append(Block("h2", "Plots"))
        for plot in plots:
            rel = Path(os.path.relpath(Path(plot).resolve(), Path(page_dir).resolve()))
            blocks.append(Block("img", text=Path(plot).stem, path=rel.as_posix()))
    blocks.append(Block("h2", "Provenance"))
    for run in runs:
        blocks.append(Block("h3", run.label))
        blocks.append(Block("items", items=tuple(provenance_items(run))))
        if run.args is not None:
            blocks.append(Block("p", "Training arguments (args.json):"))
            blocks.append(Block("code", json.dumps(run.args, indent=2, sort_keys=True)))
    return blocks


def _md_text(text: str) -> str:
    """Markdown-safe inline text: characters that would start markup or break a table escaped."""
    for char in "\\`*[]<>|":
        text = text.replace(char, "\\" + char)
    return text


def _md_code(text: str) -> str:
    """Inline code span (used in lists, not in tables) that survives backticks in the text."""
    text = text.replace("\n", " ")
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def render_markdown(blocks: Sequence[Block]) -> str:
    """The page as Markdown (GitHub flavour: pipe tables).

    Args:
        blocks: output of `build_page`.

    Returns:
        The Markdown text, ending with a newline.
    """
    out: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(b.kind[1])} {_md_text(b.text)}")
        elif b.kind == "p":
            out.append(_md_text(b.text))
        elif b.kind == "img":
            out.append(f"![{_md_text(b.text)}]({b.path.replace(' ', '%20')})")
        elif b.kind == "items":
            out.append(
                "\n".join(
                    f"- {_md_text(k)}: {_md_code(v) if code else _md_text(v)}"
                    for k, v, code in b.items
                )
            )
        elif b.kind == "code":
            fence = "````" if "```" in b.text else "```"
            out.append(f"{fence}json\n{b.text}\n{fence}")
        elif b.kind == "table":
            table = b.table
            assert table is not None  # internal: every table block carries its table
            lines = ["| " + " | ".join(_md_text(h) for h in table.header) + " |"]
            lines.append("|" + "---|" * len(table.header))
            for row, bold in zip(table.rows, table.bold, strict=True):
                cells = [
                    f"**{_md_text(c)}**" if is_b else _md_text(c)
                    for c, is_b in zip(row, bold, strict=True)
                ]
                lines.append("| " + " | ".join(cells) + " |")
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


_CSS = (
    "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse}th,td{border:1px solid #999;padding:.3em .6em;"
    "text-align:left}code,pre{background:#f4f4f4}pre{padding:.5em;overflow-x:auto}"
    "img{max-width:100%}th{cursor:pointer}"
)

# Inline, no library: a click on a column title sorts the table by it (numbers by value, the first
# number of a cell such as "0.91 / 3.2 / 1.1"), a second click reverses. Once the page has loaded,
# the body records how many of its images decoded (data-images="decoded/total").
_SCRIPT = """
document.querySelectorAll('table').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var rows = Array.from(table.rows).slice(1), up = th.dataset.up !== '1';
      var key = function (r) { var t = r.cells[col].textContent, n = parseFloat(t);
                               return isNaN(n) ? t : n; };
      rows.sort(function (a, b) { var x = key(a), y = key(b);
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1); });
      th.dataset.up = up ? '1' : '0';
      rows.forEach(function (r) { table.tBodies[0].appendChild(r); });
    });
  });
});
window.addEventListener('load', function () {
  var images = Array.from(document.images);
  var decoded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.dataset.images = decoded.length + '/' + images.length;
});
"""


def render_html(blocks: Sequence[Block]) -> str:
    """The page as a standalone HTML file (inline style, no external resource but the plots).

    Args:
        blocks: output of `build_page`; the first "h1" gives the title.

    Returns:
        The HTML text, ending with a newline.
    """
    esc = html.escape
    title = next((b.text for b in blocks if b.kind == "h1"), "report")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head>",
        "<body>",
    ]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"<{b.kind}>{esc(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{esc(b.text)}</p>")
        elif b.kind == "img":
            out.append(f'<p><img src="{esc(b.path)}" alt="{esc(b.text)}"></p>')
        elif b.kind == "items":
            out.append("<ul>")
            for k, v, code in b.items:
                value = f"<code>{esc(v)}</code>" if code else esc(v)
                out.append(f"<li>{esc(k)}: {value}</li>")
            out.append("</ul>")
        elif b.kind == "code":
            out.append(f"<pre><code>{esc(b.text)}</code></pre>")
        elif b.kind == "table":
            table = b.table
            assert table is not None  # internal: every table block carries its table
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in table.header) + "</tr>")
            for row, bold in zip(table.rows, table.bold, strict=True):
                cells = [
                    f"<td><b>{esc(c)}</b></td>" if is_b else f"<td>{esc(c)}</td>"
                    for c, is_b in zip(row, bold, strict=True)
                ]
                out.append("<tr>" + "".join(cells) + "</tr>")
            out.append("</table>")
    out.append(f"<script>{_SCRIPT}</script>")
    out.append("</body>\n</html>\n")
    return "\n".join(out)


def write_pages(
    dest: Path, blocks: Sequence[Block], html_page: bool, before: dict[Path, str] | None = None
) -> list[Path]:
    """Write `blocks` as the Markdown page `dest` and, with `html_page`, as its HTML twin beside
    it, after the files of `before` (path -> text); returns the files written, the page first.

    The page Make checks is written last: an interruption leaves it missing or old.
    """
    pages = dict(before or {})
    if html_page:
        pages[dest.with_suffix(".html")] = render_html(blocks)
    pages[dest] = render_markdown(blocks)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for path, text in pages.items():
        write_text_atomic(path, text)
    return sorted(pages, key=lambda path: path != dest)  # the page first
