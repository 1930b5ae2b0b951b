"""The SVG chart of bench/run's results, drawn by hand with the standard library: requests per
second of every scenario at 64 connections (with its ratio to the bare-hyper limit), and
throughput of the form hook and the limit by connections and by body size."""

import math
from html import escape

WIDTH = 960
BAR_HEIGHT = 22
COLOURS = {"limit": "#888888", "form": "#1f77b4"}
FONT = 'font-family="sans-serif"'


def write(report, path):
    parts = []
    rows = [row for row in report["rows"]]
    limit = next((row["rps"] for row in rows if row["name"] == "limit" and "rps" in row), None)
    top = 70
    bars_height = len(rows) * (BAR_HEIGHT + 6)
    title = "hookgate benchmark " + report["started"]
    if report["quick"]:
        title += " (quick validation run on a busy machine, not a result)"
    m = report["machine"]
    parts.append(f'<text x="20" y="24" {FONT} font-size="16" font-weight="bold">{escape(title)}</text>')
    parts.append(
        f'<text x="20" y="44" {FONT}>{escape(m["cpu"])}, {m["cores"]} cores; 4 KiB O_DSYNC write '
        f'{m["fsync_4k_dsync_ms_p50"]:.3f} ms; load average {m["load_average"]:.2f}</text>')
    parts.append(f'<text x="20" y="{top - 8}" {FONT} font-weight="bold">requests (or messages) per second, '
                 f'64 connections</text>')
    label_width, bar_left = 260, 280
    bar_space = WIDTH - bar_left - 140
    peak = max([row.get("rps", 0) for row in rows] + [1])
    for index, row in enumerate(rows):
        y = top + index * (BAR_HEIGHT + 6)
        parts.append(f'<text x="{label_width}" y="{y + 15}" {FONT} text-anchor="end">{escape(row["label"])}</text>')
        if "failed" in row:
            parts.append(f'<text x="{bar_left}" y="{y + 15}" {FONT} fill="#c00">FAILED</text>')
            continue
        width = max(1, row["rps"] / peak * bar_space)
        colour = COLOURS["limit"] if row["name"] == "limit" else COLOURS["form"]
        parts.append(f'<rect x="{bar_left}" y="{y}" width="{width:.1f}" height="{BAR_HEIGHT}" fill="{colour}"/>')
        ratio = (f" ({row['rps'] / limit:.2f} of limit)"
                 if limit and row["name"] not in ("limit", "smtp-hookgate", "smtp-sink", "postfix") else "")
        parts.append(f'<text x="{bar_left + width + 6:.1f}" y="{y + 15}" {FONT}>{row["rps"]:,.0f}{ratio}</text>')
    y = top + bars_height + 40
    panels = [("by connections (450-byte form body)", "connections", "connections"),
              ("by body size (64 connections)", "body_kib", "KiB")]
    panel_width = (WIDTH - 60) / 2
    drawn = False
    for index, (caption, key, unit) in enumerate(panels):
        sweep = report["sweeps"].get(key) or {}
        if not sweep:
            continue
        drawn = True
        parts.extend(line_panel(20 + index * (panel_width + 20), y, panel_width, 240, caption, sweep, unit))
    height = y + (310 if drawn else 0)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}"><rect width="100%" height="100%" fill="white"/><g font-size="12">'
           + "".join(parts) + "</g></svg>\n")
    path.write_text(svg)


def line_panel(x, y, width, height, caption, sweep, unit):
    """Lines of requests per second over the sweep's points, evenly spaced (they grow by 4x)."""
    parts = [f'<text x="{x}" y="{y}" {FONT} font-weight="bold">req/s {escape(caption)}, log scale</text>']
    left, top = x + 60, y + 15
    plot_width, plot_height = width - 80, height - 50
    points = sorted({int(point) for values in sweep.values() for point in values})
    # A logarithmic axis: the limit and hookgate differ by up to two orders of magnitude.
    rates = [value for values in sweep.values() for value in values.values() if value > 0] or [1]
    low = 10 ** math.floor(math.log10(min(rates)))
    high = 10 ** math.ceil(math.log10(max(rates)))
    def py(value):
        share = (math.log10(max(value, low)) - math.log10(low)) / (math.log10(high) - math.log10(low) or 1)
        return top + plot_height - plot_height * share
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_width}" height="{plot_height}" fill="none" '
                 f'stroke="#ccc"/>')
    tick = low
    while tick <= high:
        parts.append(f'<line x1="{left}" x2="{left + plot_width}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" '
                     f'stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{py(tick) + 4:.1f}" {FONT} text-anchor="end">{tick:,.0f}</text>')
        tick *= 10
    def px(i):
        return left + (plot_width * i / max(1, len(points) - 1))
    for i, point in enumerate(points):
        parts.append(f'<text x="{px(i):.1f}" y="{top + plot_height + 16}" {FONT} text-anchor="middle">'
                     f'{point}</text>')
    parts.append(f'<text x="{left + plot_width / 2}" y="{top + plot_height + 32}" {FONT} '
                 f'text-anchor="middle">{unit}</text>')
    for legend, (name, values) in enumerate(sorted(sweep.items())):
        colour = COLOURS.get(name, "#d62728")
        coords = [(px(i), py(values[str(p)]))
                  for i, p in enumerate(points) if str(p) in values]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                     + " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in coords) + '"/>')
        for cx, cy in coords:
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3" fill="{colour}"/>')
        label = "bare hyper (limit)" if name == "limit" else "hookgate form hook" if name == "form" else name
        parts.append(f'<text x="{left + legend * 170}" y="{top + plot_height + 50}" {FONT} fill="{colour}" '
                     f'font-weight="bold">— {escape(label)}</text>')
    return parts
