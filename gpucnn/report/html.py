"""The report's page: one self-contained HTML file (inline CSS, images as data: URIs, charts as inline SVG;
nothing fetched from anywhere), and the small helpers the sections build it with."""
import html

from .png import data_uri

__all__ = ["escape", "page", "section", "table", "image", "key_values"]

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #222;
       margin: 0 auto; padding: 12px 24px 40px; max-width: 1220px; }
h1 { font-size: 22px; margin: 8px 0 2px; }
h2 { font-size: 18px; margin: 28px 0 8px; padding-bottom: 3px; border-bottom: 1px solid #ddd; }
h3 { font-size: 14px; margin: 14px 0 4px; }
p.note, span.note { color: #666; font-size: 12.5px; margin: 4px 0; }
table { border-collapse: collapse; margin: 4px 0 8px; }
td, th { padding: 2px 8px; text-align: left; vertical-align: top; }
table.kv td:first-child { color: #555; white-space: nowrap; }
table.kv td { border-bottom: 1px solid #eee; }
table.kv code { white-space: pre-wrap; word-break: break-all; }
table.numbers td, table.numbers th { text-align: right; border-bottom: 1px solid #eee; }
table.numbers td:first-child, table.numbers th:first-child { text-align: left; }
table.perclass td:last-child { text-align: left; }
table.confusion td.cm { width: 42px; height: 26px; text-align: center; font-size: 12px; padding: 0;
                        border: 1px solid #fff; }
table.confusion th { font-size: 12px; font-weight: 600; }
table.confusion th.col { writing-mode: vertical-rl; transform: rotate(180deg); height: 86px;
                         text-align: left; padding: 2px 0; }
.bar { display: inline-block; height: 11px; background: #4e79a7; vertical-align: middle; }
.charts { display: flex; flex-wrap: wrap; gap: 14px; }
svg.chart { background: #fff; font-size: 11px; }
svg.chart text { fill: #333; }
svg.chart text.title { font-size: 13px; font-weight: 600; }
svg.chart .frame { fill: none; stroke: #999; }
svg.chart .grid { stroke: #e4e4e4; }
svg.chart .axis { stroke: #999; }
img { image-rendering: pixelated; max-width: 100%; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
.gallery figure { margin: 0; width: 120px; text-align: center; font-size: 11.5px; line-height: 1.3; }
.gallery figure img { display: block; margin: 0 auto 2px; border: 1px solid #ccc; }
.wrong b { color: #c0392b; }
figure.maps { margin: 6px 0 12px; }
figure.maps figcaption { font-size: 12.5px; color: #444; margin-bottom: 3px; }
"""


def escape(text):
    return html.escape(str(text), quote=True)


def page(title, subtitle, sections):
    """The whole HTML document: a title, a line under it, and the sections (HTML strings) in order."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{escape(title)}</h1>\n<p class=\"note\">{escape(subtitle)}</p>\n"
            + "\n".join(sections) + "\n</body>\n</html>\n")


def section(anchor, heading, body):
    """A <section id=anchor> with its <h2> heading and ``body`` (HTML)."""
    return f'<section id="{escape(anchor)}">\n<h2>{escape(heading)}</h2>\n{body}\n</section>'


def table(header, rows, css="numbers"):
    """A <table>: ``header`` (cells, or None) and ``rows`` of cells, each cell HTML already."""
    head = "<tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}">{head}{body}</table>'


def key_values(pairs):
    """A two-column table of (name, value) pairs, values shown as code; pairs whose value is None are left out."""
    rows = [(escape(k), f"<code>{escape(v)}</code>") for k, v in pairs if v is not None]
    return table(None, rows, css="kv")


def image(pixels, alt, css=None):
    """An <img> holding ``pixels`` (uint8 grey or RGB) as an embedded PNG."""
    klass = f' class="{css}"' if css else ""
    height, width = pixels.shape[:2]
    return f'<img{klass} src="{data_uri(pixels)}" width="{width}" height="{height}" alt="{escape(alt)}">'
