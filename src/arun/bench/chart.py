"""A PNG chart of a report, written with the standard library only.

matplotlib would be a ~40 MB dependency (numpy, pillow, fonttools, ...) for one
picture; a bar chart needs rectangles, lines and a few capitals, so this module
draws into an RGB buffer with a built-in 5x7 pixel font and encodes the PNG
itself (zlib, CRC-32).

One panel per scenario: a row group per step, one bar per endpoint showing
p50, a whisker from p50 to p99 with a tick at p95, the p50 value beside it, on
a logarithmic millisecond axis shared by the panel.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

from arun.bench.runner import Report
from arun.bench.scenarios import ScenarioResult

__all__ = ["Canvas", "render_chart", "write_chart"]

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
BLACK: Color = (20, 20, 20)
GREY: Color = (200, 200, 200)
DARK: Color = (90, 90, 90)
PALETTE: tuple[Color, ...] = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))

_FONT_SRC = {
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11100 10010 10001 10001 10001 10010 11100",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 10001 01010 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    ",": "00000 00000 00000 00000 01100 00100 01000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    "_": "00000 00000 00000 00000 00000 00000 11111",
    "/": "00000 00001 00010 00100 01000 10000 00000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    "%": "11000 11001 00010 00100 01000 10011 00011",
    "=": "00000 00000 11111 00000 11111 00000 00000",
    "+": "00000 00100 00100 11111 00100 00100 00000",
    "<": "00010 00100 01000 10000 01000 00100 00010",
    ">": "01000 00100 00010 00001 00010 00100 01000",
    "[": "01110 01000 01000 01000 01000 01000 01110",
    "]": "01110 00010 00010 00010 00010 00010 01110",
    "?": "01110 10001 00001 00010 00100 00000 00100",
}
FONT: dict[str, tuple[int, ...]] = {
    ch: tuple(int(r, 2) for r in rows.split()) for ch, rows in _FONT_SRC.items()
}
GLYPH_W, GLYPH_H = 5, 7


class Canvas:
    """An RGB image in memory with the few drawing operations a bar chart needs."""

    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(background) * (width * height))

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        """Fill [x0, x1) x [y0, y1), clipped to the canvas."""
        x0, x1 = max(0, min(x0, x1)), min(self.width, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.height, max(y0, y1))
        if x0 >= x1:
            return
        row = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            start = (y * self.width + x0) * 3
            self.pixels[start : start + len(row)] = row

    def hline(self, x0: int, x1: int, y: int, color: Color, thickness: int = 1) -> None:
        self.rect(x0, y, x1, y + thickness, color)

    def vline(self, x: int, y0: int, y1: int, color: Color, thickness: int = 1) -> None:
        self.rect(x, y0, x + thickness, y1, color)

    def text(self, x: int, y: int, s: str, color: Color = BLACK, scale: int = 2) -> int:
        """Draw ``s`` (upper-cased) with its top-left at (x, y); the x after it."""
        for ch in s.upper():
            glyph = FONT.get(ch, FONT["?"])
            for row, bits in enumerate(glyph):
                for col in range(GLYPH_W):
                    if bits & (1 << (GLYPH_W - 1 - col)):
                        self.rect(
                            x + col * scale,
                            y + row * scale,
                            x + (col + 1) * scale,
                            y + (row + 1) * scale,
                            color,
                        )
            x += (GLYPH_W + 1) * scale
        return x

    @staticmethod
    def text_width(s: str, scale: int = 2) -> int:
        return len(s) * (GLYPH_W + 1) * scale

    def png(self) -> bytes:
        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

        stride = self.width * 3
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * stride : (y + 1) * stride]) for y in range(self.height)
        )
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def _fmt(ms: float) -> str:
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def render_chart(report: Report, width: int = 1100) -> Canvas:
    names = [e["name"] for e in report.endpoints]
    colors = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    bar_h, gap, group_gap = 14, 3, 12
    label_w = 200
    plot_x0, plot_x1 = label_w + 10, width - 90
    panels: list[tuple[str, list[str], dict[str, ScenarioResult]]] = []
    for scenario, results in report.scenarios.items():
        ok = {n: r for n, r in results.items() if isinstance(r, ScenarioResult)}
        steps: list[str] = []
        for r in ok.values():
            steps += [s for s in r.steps if s not in steps]
        if steps:
            panels.append((scenario, steps, ok))
    height = 60
    for _, steps, _ok in panels:
        height += 70 + len(steps) * (len(names) * (bar_h + gap) + group_gap)
    c = Canvas(width, max(height, 120))
    c.text(10, 10, "ARUN BENCH  BAR: P50  WHISKER: P95 TICK, P99 END  (MS, LOG SCALE)", BLACK)
    x = 10
    for n in names:
        c.rect(x, 34, x + 14, 48, colors[n])
        x = c.text(x + 20, 35, n, BLACK) + 20
    y = 64
    for scenario, steps, ok in panels:
        values = [
            v
            for r in ok.values()
            for st in r.steps.values()
            for v in (st.p50_ms, st.p99_ms)
            if not math.isnan(v) and v > 0
        ]
        lo = 10 ** math.floor(math.log10(min(values))) if values else 0.1
        hi = 10 ** math.ceil(math.log10(max(values))) if values else 1000.0
        if hi <= lo:
            hi = lo * 10

        def px(ms: float, lo: float = lo, hi: float = hi) -> int:
            ms = min(max(ms, lo), hi)
            return plot_x0 + int(
                (math.log10(ms) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (plot_x1 - plot_x0)
            )

        c.text(10, y, f"{scenario}", BLACK)
        y += 22
        top = y
        body = len(steps) * (len(names) * (bar_h + gap) + group_gap)
        decade = lo
        while decade <= hi * 1.0001:
            gx = px(decade)
            c.vline(gx, top, top + body, GREY)
            c.text(gx - Canvas.text_width(_fmt(decade), 1) // 2, top + body + 4, _fmt(decade), DARK, scale=1)
            decade *= 10
        for step in steps:
            c.text(10, y + 2, step[:16], BLACK)
            for n in names:
                res = ok.get(n)
                st = res.steps.get(step) if res else None
                if st is not None and not math.isnan(st.p50_ms):
                    color = colors[n]
                    x50 = px(st.p50_ms)
                    c.rect(plot_x0, y, x50, y + bar_h, color)
                    mid = y + bar_h // 2
                    if not math.isnan(st.p99_ms):
                        c.hline(x50, px(st.p99_ms), mid, DARK, 2)
                        c.vline(px(st.p99_ms), y + 2, y + bar_h - 2, DARK, 2)
                    if not math.isnan(st.p95_ms):
                        c.vline(px(st.p95_ms), y + 4, y + bar_h - 4, DARK, 2)
                    c.text(
                        max(x50, px(st.p99_ms) if not math.isnan(st.p99_ms) else x50) + 6,
                        y + 3,
                        _fmt(st.p50_ms),
                        DARK,
                        1,
                    )
                y += bar_h + gap
            y += group_gap
        y += 30
    return c


def write_chart(report: Report, path: str | Path, width: int = 1100) -> int:
    """Render ``report`` and write the PNG to ``path``; bytes written."""
    data = render_chart(report, width).png()
    Path(path).write_bytes(data)
    return len(data)
