"""Code shared by every acefleet service: logging, configuration, wire contracts, MPEG-TS."""

from __future__ import annotations

__version__ = "0.1.0"
