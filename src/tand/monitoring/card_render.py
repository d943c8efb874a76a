"""A model card (tand.monitoring.model_card.Card) as Markdown, and as one self-contained HTML page.

The HTML carries its style sheet and its plots (base64 PNG) inside: it opens offline, from a file or from
`GET /model/card`, with nothing fetched. The Markdown links the plots beside it in the run's artifacts
(../plots/). Text may hold `code` spans; everything else is escaped.
"""

from __future__ import annotations

import base64
import html
import re
import struct

CODE = re.compile(r"`([^`]+)`")
INTERVAL = re.compile(r" \(([^()]* – [^()]*)\)$")
NUMBER = re.compile(r"^[−+\-]?[\d,.]+(e[+-]?\d+)?%?( \(.*\))?$|^–$|^[\d.e+-]+ – [\d.e+-]+$")

STYLE = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#d9e2ec; --band:#243b53; --accent:#2f80ed; --zebra:#f5f7fa; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color:var(--ink); background:#eef2f6; }
header { background:var(--band); color:#fff; padding:28px 40px 22px; }
header h1 { margin:0 0 4px; font-size:26px; font-weight:600; }
header p { margin:0; color:#bcccdc; font-size:13px; }
header code { background:rgba(255,255,255,.12); color:#f0f4f8; }
.summary { display:flex; flex-wrap:wrap; gap:10px; margin-top:16px; }
.summary div { background:rgba(255,255,255,.1); border-radius:6px; padding:6px 12px; }
.summary span { display:block; font-size:11px; text-transform:uppercase; letter-spacing:.05em; color:#9fb3c8; }
.summary b { font-size:16px; font-weight:600; }
nav { padding:10px 40px; background:#fff; border-bottom:1px solid var(--line); font-size:13px; }
nav a { color:var(--accent); text-decoration:none; margin-right:18px; }
main { max-width:1080px; margin:0 auto; padding:20px 24px 40px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:18px 24px; margin:18px 0; }
h2 { margin:0 0 12px; font-size:19px; font-weight:600; border-bottom:2px solid var(--accent); padding-bottom:6px; display:inline-block; }
h3 { margin:18px 0 6px; font-size:14px; color:var(--muted); font-weight:600; }
p { margin:6px 0 10px; }
code { font:12.5px/1.4 SFMono-Regular, Menlo, Consolas, monospace; background:#f0f4f8; padding:1px 5px; border-radius:3px;
       word-break:break-all; }
table { border-collapse:collapse; width:auto; min-width:55%; margin:4px 0 10px; font-size:13.5px; }
th { text-align:left; background:var(--zebra); color:var(--muted); font-weight:600; border-bottom:2px solid var(--line); }
th, td { padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
tbody tr:nth-child(even) td { background:#fafbfc; }
td .ci { color:var(--muted); font-size:12px; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
table.pairs { width:100%; }
table.pairs th { width:210px; background:none; border-bottom:1px solid var(--line); }
.plots { display:grid; grid-template-columns:repeat(auto-fit, minmax(420px, 1fr)); grid-auto-flow:dense; gap:16px; margin-top:10px; }
figure { margin:0; border:1px solid var(--line); border-radius:6px; padding:8px; text-align:center; }
figure img { max-width:100%; height:auto; }
figure.wide { grid-column:1 / -1; }
figcaption { font-size:12.5px; color:var(--muted); margin-top:4px; }
footer { text-align:center; font-size:12px; color:var(--muted); padding-bottom:30px; }
"""


def _title(card) -> str:
    version = f" · version {card.version}" if card.version is not None else ""
    return f"Model card: {card.model_name}{version}"


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


# -- Markdown -------------------------------------------------------------------------------------


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list, rows: list) -> list[str]:
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]


def to_markdown(card) -> str:
    lines = [f"# {_title(card)}", "", f"Run `{card.run_id}` · written {card.created}", ""]
    lines += _md_table([k for k, _ in card.summary], [[v for _, v in card.summary]]) + [""]
    for section in card.sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            kind = block[0]
            if kind == "text":
                lines += [block[1], ""]
            elif kind == "pairs":
                lines += [f"- **{key}**: {value}" for key, value in block[1]] + [""]
            elif kind == "table":
                _, header, rows, note = block
                lines += ([f"**{note}**", ""] if note else []) + _md_table(header, rows) + [""]
            elif kind == "plots":
                lines += [f"![{caption}](../plots/{name})" for caption, name, _ in block[1]] + [""]
    return "\n".join(lines).rstrip() + "\n"


# -- HTML -----------------------------------------------------------------------------------------


def _text(value) -> str:
    return CODE.sub(r"<code>\1</code>", html.escape(str(value)))


def _td(value) -> str:
    if NUMBER.match(str(value)) is None:
        return f"<td>{_text(value)}</td>"
    # "0.97 (0.93 – 1.00)": the interval in a quieter type than the value
    return '<td class="num">' + INTERVAL.sub(r' <span class="ci">(\1)</span>', _text(value)) + "</td>"


def _html_table(header: list, rows: list, note: str | None) -> str:
    head = "".join(f"<th>{_text(h)}</th>" for h in header)
    # The first column names the row (a class, a value): left-aligned even when it looks like a number.
    body = "".join(f"<tr><td>{_text(row[0])}</td>" + "".join(map(_td, row[1:])) + "</tr>" for row in rows)
    caption = f"<h3>{_text(note)}</h3>" if note else ""
    return f"{caption}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _wide(png: bytes) -> str:
    """A landscape plot (two panels side by side) takes the grid's whole row."""
    width, height = struct.unpack(">II", png[16:24])  # the PNG header's IHDR chunk
    return ' class="wide"' if width > 1.6 * height else ""


def _html_block(block: tuple) -> str:
    kind = block[0]
    if kind == "text":
        return f"<p>{_text(block[1])}</p>"
    if kind == "pairs":
        rows = "".join(f"<tr><th>{_text(k)}</th><td>{_text(v)}</td></tr>" for k, v in block[1])
        return f'<table class="pairs"><tbody>{rows}</tbody></table>'
    if kind == "table":
        return _html_table(*block[1:])
    figures = "".join(
        f'<figure{_wide(png)}><img alt="{html.escape(caption)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{_text(caption)}</figcaption></figure>"
        for caption, _, png in block[1]
    )
    return f'<div class="plots">{figures}</div>'


def to_html(card) -> str:
    summary = "".join(f"<div><span>{_text(k)}</span><b>{_text(v)}</b></div>" for k, v in card.summary)
    nav = "".join(f'<a href="#{_anchor(s.title)}">{html.escape(s.title)}</a>' for s in card.sections)
    sections = "".join(
        f'<section id="{_anchor(s.title)}"><h2>{html.escape(s.title)}</h2>{"".join(map(_html_block, s.blocks))}</section>'
        for s in card.sections
    )
    title = html.escape(_title(card))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body>"
        f"<header><h1>{title}</h1><p>MLflow run <code>{html.escape(card.run_id)}</code> · written {html.escape(card.created)}</p>"
        f'<div class="summary">{summary}</div></header><nav>{nav}</nav><main>{sections}</main>'
        f"<footer>Written at training by the template's model card (tand.monitoring.model_card).</footer></body></html>\n"
    )
