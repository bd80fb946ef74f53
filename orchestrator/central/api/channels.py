"""(being written for issue 14; see docs/catalog.md)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
