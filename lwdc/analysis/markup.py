"""HTML pieces shared by the report's sections: numbers, tables and embedded PNGs."""
from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence


def fmt(v, digits: int = 2) -> str:
    return f"{v:,}" if isinstance(v, int) else f"{v:,.{digits}f}" if isinstance(v, float) else html.escape(str(v))


def table(header: Sequence[str], rows: Iterable[Sequence], left: int = 1, classes: Sequence[str] = ()) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{html.escape(h)}</th>' for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{classes[r]}"' if r < len(classes) and classes[r] else ""
        body.append(f"<tr{cls}>" + "".join(
            f'<td class="{"l" if i < left else ""}{" op" if header[i].startswith("chosen") else ""}">{c}</td>'
            for i, c in enumerate(row)) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
