"""The activity chart, drawn on the server as SVG: no script, no library, no network.

One column per day of the window (zero days drawn as an empty slot on the baseline), its
spend stacked by service in the order of `Activity.services`. Each column's `<title>` is
its tooltip: the date, the spend and request count, and each service's share. The colours
are Okabe and Ito's palette, told apart by most colour-blind readers; the legend names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from lava_mcp.core.usage import Activity
from lava_mcp.money import format_cost

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
WIDTH = 720
HEIGHT = 260
LEFT = 8  # the y-axis figures sit inside the plot, above their grid lines
BOTTOM = 30  # room for the dates
TOP = 34  # room for the top figure


@dataclass(frozen=True)
class LegendItem:
    service: str
    colour: str
    spend: str
    requests: int


def colours(activity: Activity) -> dict[str, str]:
    return {service: PALETTE[index % len(PALETTE)] for index, service in enumerate(activity.services)}


def legend(activity: Activity) -> list[LegendItem]:
    """Each service in the chart, its colour and its totals over the window."""
    palette = colours(activity)
    items = []
    for service in activity.services:
        spend = sum(
            day.by_service[service].spend_micros for day in activity.days if service in day.by_service
        )
        requests = sum(day.by_service[service].requests for day in activity.days if service in day.by_service)
        items.append(LegendItem(service, palette[service], format_cost(spend), requests))
    return items


def svg(activity: Activity) -> Markup:
    """The chart as inline SVG markup (every text in it escaped)."""
    palette = colours(activity)
    plot_width = WIDTH - LEFT - 8
    plot_height = HEIGHT - TOP - BOTTOM
    baseline = TOP + plot_height
    count = len(activity.days)
    slot = plot_width / count
    bar = max(1.0, slot * 0.72)
    peak = activity.peak_spend_micros
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="Spend per day over the last {activity.window_days} days, by service" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{LEFT}" y1="{baseline}" x2="{WIDTH - 8}" y2="{baseline}" class="axis"/>',
    ]
    for divisor in (2, 1):  # grid lines at half the peak day's spend and at the peak
        y = baseline - plot_height / divisor
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - 8}" y2="{y:.1f}" class="grid"/>')
    for index, day in enumerate(activity.days):
        x = LEFT + index * slot + (slot - bar) / 2
        shares = ", ".join(
            f"{service}: ${format_cost(total.spend_micros)}, {total.requests} request{'s' if total.requests != 1 else ''}"
            for service, total in sorted(day.by_service.items())
        )
        tooltip = (
            f"{day.day.isoformat()}: ${format_cost(day.spend_micros)}, "
            f"{day.requests} request{'s' if day.requests != 1 else ''}" + (f" ({shares})" if shares else "")
        )
        parts.append(f'<g class="day" data-date="{day.day.isoformat()}" data-requests="{day.requests}">')
        parts.append(f"<title>{escape(tooltip)}</title>")
        # The whole slot answers the hover, so a zero day's tooltip is reachable too.
        parts.append(
            f'<rect x="{LEFT + index * slot:.2f}" y="{TOP}" width="{slot:.2f}" height="{plot_height}" class="slot"/>'
        )
        top = float(baseline)
        for service in activity.services:
            total = day.by_service.get(service)
            if total is None or not peak:
                continue
            height = plot_height * total.spend_micros / peak
            if total.spend_micros and height < 1:
                height = 1.0  # a tiny spend stays visible
            top -= height
            parts.append(
                f'<rect x="{x:.2f}" y="{top:.2f}" width="{bar:.2f}" height="{height:.2f}" '
                f'fill="{palette[service]}" data-service="{escape(service)}"/>'
            )
        if day.requests == 0:
            parts.append(f'<rect x="{x:.2f}" y="{baseline - 2}" width="{bar:.2f}" height="2" class="zero"/>')
        parts.append("</g>")
    label_every = {7: 1, 30: 5, 90: 15}.get(count, max(1, count // 6))
    for index, day in enumerate(activity.days):
        last = index == count - 1
        # Every `label_every`-th day, and the last (unless a label is already that close).
        if not last and (index % label_every or count - 1 - index < label_every):
            continue
        if count > 1 and index == 0:  # the end labels stay inside the picture
            x, anchor = float(LEFT), "start"
        elif count > 1 and last:
            x, anchor = float(WIDTH - 8), "end"
        else:
            x, anchor = LEFT + index * slot + slot / 2, "middle"
        text = f"{day.day:%b} {day.day.day}"
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 6}" class="tick" text-anchor="{anchor}">{text}</text>')
    for divisor in (2, 1):  # their figures, drawn over the bars
        y = baseline - plot_height / divisor
        label = format_cost(peak // divisor) if peak else ("0.000000" if divisor == 1 else "")
        if label:
            parts.append(f'<text x="{LEFT + 2}" y="{y - 5:.1f}" class="tick figure">${label}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
