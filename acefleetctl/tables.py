"""Plain aligned tables for terminals (stdlib only), and the small cell formatters they use."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "(none)") -> str:
    """Columns padded to their widest cell; numbers align right, text left."""
    if not rows:
        return "  ".join(headers) + "\n" + empty
    cells = [[cell(v) for v in row] for row in rows]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(headers))]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for values in cells:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def cell(value: Any) -> str:
    """None and "" are a dash (an empty cell would shift the columns a reader counts), booleans
    read yes/no, the rest is str()."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def age(iso: str | None, now: datetime | None = None) -> str:
    """How long ago an ISO time was, short: 4s, 3m, 2h, 5d."""
    if not iso:
        return "-"
    try:
        then = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def when(iso: str | None) -> str:
    """An ISO time to the second, as a person reads it (UTC as central sends it)."""
    if not iso:
        return "-"
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def short(text: str | None, width: int = 16) -> str:
    """Long ids (content keys, stream ids) cut to ``width`` with an ellipsis."""
    if text is None:
        return "-"
    return text if len(text) <= width else text[: width - 1] + "…"
