"""Write central's OpenAPI document: ``python -m orchestrator.central.openapi [FILE]``.

The committed copy (docs/openapi/central.json) is checked against the app by a test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from orchestrator.central.app import create_app
from orchestrator.central.settings import CentralSettings

DOC_KEY = "x" * 32  # only to build the app; never served


def document() -> dict[str, Any]:
    settings = CentralSettings(viewer_keys=[DOC_KEY], database_url="sqlite+aiosqlite://")
    return create_app(settings).openapi()


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    text = render()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
