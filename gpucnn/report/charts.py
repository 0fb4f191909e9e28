"""Line charts as inline SVG (text in the page itself: crisp at any zoom, no plotting library).

``line_chart([("train", epochs, losses), ("test", epochs, test_losses)], ...)`` draws each series as a
polyline with markers, axes with round-number ticks (or powers of ten on a log axis), and a legend.
"""
import html
import math

import numpy

__all__ = ["PALETTE", "nice_ticks", "line_chart"]

#: series colours (Tableau's first four: blue, orange, green, red)
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759")


def nice_ticks(low, high, count=5):
    """Round-number ticks (steps of 1, 2 or 5 times a power of ten) from at or below ``low`` to at or above
    ``high``; a single value gets a range of half its size either side."""
    if not high > low:
        half = abs(low) / 2 or 0.5
        low, high = low - half, low + half
    raw = (high - low) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def _x_ticks(xs):
    """Ticks of the x axis (epochs or steps): whole numbers; one value stands alone in the middle."""
    if xs.max() == xs.min():
        return [float(xs[0])]
    ticks = nice_ticks(xs.min(), xs.max())
    if ticks[1] - ticks[0] < 1:
        ticks = [float(t) for t in range(int(math.floor(xs.min())), int(math.ceil(xs.max())) + 1)]
    return ticks


def _label(value, log):
    """A tick's text: '0.5', '2000', or '1.2e-3' for the very small or large (and on a log axis)."""
    if log or (value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5)):
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa.removesuffix('.0')}e{int(exponent)}"
    return f"{value:.6g}"


def line_chart(series, title, xlabel, ylabel, width=390, height=260, log=False, markers=True, from_zero=False):
    """An <svg> element (a string) plotting ``series``: [(label, xs, ys), ...]; ``log`` puts y on a log axis,
    ``from_zero`` starts a linear one at 0."""
    series = [(name, numpy.asarray(xs, numpy.float64), numpy.asarray(ys, numpy.float64)) for name, xs, ys in series]
    series = [(name, xs, ys) for name, xs, ys in series if len(xs) and len(xs) == len(ys)]
    left, right, top, bottom = 62, 14, 28, 44
    out = [f'<svg class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
           f'<text x="{left}" y="17" class="title">{html.escape(title)}</text>']
    if not series:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(out)
    xs_all = numpy.concatenate([xs for _, xs, _ in series])
    ys_all = numpy.concatenate([ys for _, _, ys in series])
    log = log and bool((ys_all > 0).all())
    ys_plot = numpy.log10(ys_all) if log else ys_all
    x_ticks = _x_ticks(xs_all)
    if log:
        lo, hi = math.floor(ys_plot.min() + 1e-9), math.ceil(ys_plot.max() - 1e-9)
        y_ticks = [float(t) for t in range(lo, max(hi, lo + 1) + 1)]
    else:
        y_ticks = nice_ticks(min(ys_plot.min(), 0.0) if from_zero else ys_plot.min(), ys_plot.max())
    x_pad = 0.04 * (xs_all.max() - xs_all.min()) or 0.5
    x0, x1 = xs_all.min() - x_pad, xs_all.max() + x_pad
    x_ticks = [t for t in x_ticks if x0 <= t <= x1]
    y0, y1 = y_ticks[0], y_ticks[-1]
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x):
        return left + (numpy.asarray(x) - x0) / (x1 - x0) * plot_w

    def py(y):
        return top + plot_h - (numpy.asarray(y) - y0) / (y1 - y0) * plot_h

    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>')
    for t in y_ticks:
        y = py(t)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{_label(10 ** t if log else t, log)}</text>')
    for t in x_ticks:
        x = px(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" class="axis"/>'
                   f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{_label(t, False)}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">{html.escape(xlabel)}</text>'
               f'<text transform="translate(14 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">'
               f'{html.escape(ylabel)}</text>')
    for k, (name, xs, ys) in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px(xs), py(numpy.log10(ys) if log else ys)))
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if markers and len(xs) <= 60:
            out.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}"/>'
                       for a, b in zip(px(xs), py(numpy.log10(ys) if log else ys)))
        legend_x = left + plot_w - 62 * (len(series) - k)  # the legend: one row, right of the title
        out.append(f'<line x1="{legend_x}" x2="{legend_x + 16}" y1="13" y2="13" stroke="{colour}" stroke-width="2"/>'
                   f'<text x="{legend_x + 20}" y="17">{html.escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)
