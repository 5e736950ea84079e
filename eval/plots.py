"""Inline SVG charts for the self-contained report: no plotting library, no external files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#4b5563")


def bar_chart(metrics: Sequence[str], series: dict[str, dict[str, float]], *, title: str,
              width: int = 900, height: int = 320) -> str:
    """Grouped horizontal-axis bars: one group per metric (0-1 scale), one bar per config."""
    if not metrics or not series:
        return ""
    left, bottom, top, right = 50, 90, 30, 10
    plot_w, plot_h = width - left - right, height - top - bottom
    group_w = plot_w / len(metrics)
    names = list(series)
    bar_w = max(2.0, min(28.0, (group_w - 8) / len(names)))
    parts = [f'<svg class="plot" role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
             f'<text x="{left}" y="18" font-size="14" font-weight="bold">{escape(title)}</text>']
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{tick:g}</text>')
    for gi, m in enumerate(metrics):
        x0 = left + gi * group_w + (group_w - bar_w * len(names)) / 2
        for si, name in enumerate(names):
            v = series[name].get(m)
            if v is None:
                continue
            v = max(0.0, min(1.0, v))
            h = plot_h * v
            x = x0 + si * bar_w
            parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
                         f'fill="{PALETTE[si % len(PALETTE)]}"><title>{escape(name)} {escape(m)}: {v:.3f}'
                         f'</title></rect>')
        cx = left + gi * group_w + group_w / 2
        parts.append(f'<text font-size="11" text-anchor="end" transform="translate({cx:.1f},{top + plot_h + 12}) '
                     f'rotate(-35)">{escape(m)}</text>')
    parts.append(_legend(names, width - right - 150, top))
    parts.append("</svg>")
    return "".join(parts)


def _legend(names: Sequence[str], x: float, y: float) -> str:
    if len(names) < 2:
        return ""
    return "".join(f'<rect x="{x}" y="{y + i * 16}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
                   f'<text x="{x + 14}" y="{y + 9 + i * 16}" font-size="11">{escape(n)}</text>'
                   for i, n in enumerate(names))


def box_plot(groups: Mapping[str, Sequence[float]], *, title: str, unit: str = "ms", width: int = 900,
             row_h: int = 34) -> str:
    """One horizontal box (quartiles, whiskers at min/max, median line) plus the points, per group."""
    groups = {k: sorted(v) for k, v in groups.items() if v}
    if not groups:
        return ""
    left, right, top = 230, 20, 34
    height = top + row_h * len(groups) + 30
    hi = max(max(v) for v in groups.values()) or 1.0
    scale = (width - left - right) / (hi * 1.05)

    def q(vs: Sequence[float], p: float) -> float:
        pos = (len(vs) - 1) * p
        lo = int(pos)
        return vs[lo] + (vs[min(lo + 1, len(vs) - 1)] - vs[lo]) * (pos - lo)

    parts = [f'<svg class="plot" role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
             f'<text x="10" y="18" font-size="14" font-weight="bold">{escape(title)}</text>']
    for t in range(6):
        val = hi * 1.05 * t / 5
        x = left + val * scale
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{height - 26}" stroke="#e5e7eb"/>'
                     f'<text x="{x:.1f}" y="{height - 12}" font-size="11" text-anchor="middle">{val:,.0f} {unit}'
                     f'</text>')
    for i, (name, vs) in enumerate(groups.items()):
        cy = top + i * row_h + row_h / 2
        color = PALETTE[i % len(PALETTE)]
        q1, med, q3 = q(vs, 0.25), q(vs, 0.5), q(vs, 0.75)
        parts.append(f'<text x="{left - 8}" y="{cy + 4:.1f}" font-size="11" text-anchor="end">{escape(name)}</text>'
                     f'<line x1="{left + vs[0] * scale:.1f}" x2="{left + vs[-1] * scale:.1f}" y1="{cy:.1f}" '
                     f'y2="{cy:.1f}" stroke="{color}"/>'
                     f'<rect x="{left + q1 * scale:.1f}" y="{cy - 9:.1f}" width="{max(1.0, (q3 - q1) * scale):.1f}" '
                     f'height="18" fill="{color}" fill-opacity="0.25" stroke="{color}">'
                     f'<title>{escape(name)}: median {med:,.0f} {unit}, IQR {q1:,.0f}-{q3:,.0f}</title></rect>'
                     f'<line x1="{left + med * scale:.1f}" x2="{left + med * scale:.1f}" y1="{cy - 9:.1f}" '
                     f'y2="{cy + 9:.1f}" stroke="{color}" stroke-width="2"/>')
        parts.extend(f'<circle cx="{left + v * scale:.1f}" cy="{cy:.1f}" r="2" fill="{color}" fill-opacity="0.6"/>'
                     for v in vs)
    parts.append("</svg>")
    return "".join(parts)
