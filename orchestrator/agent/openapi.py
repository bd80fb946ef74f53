"""Write the agent's OpenAPI document: ``python -m orchestrator.agent.openapi [PATH]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from orchestrator.agent.app import create_app
from orchestrator.agent.settings import AgentSettings

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "agent.json"


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PATH
    app = create_app(AgentSettings(api_key="openapi-generation-only", host="openapi"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
