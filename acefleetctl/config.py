"""Where central is and which key to use: flags, then ``ACEFLEET_URL``/``ACEFLEET_API_KEY``, then
the config file (``~/.config/acefleet/cli.toml``: ``url = "..."``, ``api_key = "..."``)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from acefleetctl.errors import CliError, Exit

URL_ENV = "ACEFLEET_URL"
KEY_ENV = "ACEFLEET_API_KEY"
CONFIG_ENV = "ACEFLEET_CLI_CONFIG"
FILE_KEYS = frozenset({"url", "api_key"})


def default_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "acefleet" / "cli.toml"


@dataclass(frozen=True)
class Target:
    """Central's base URL and the API key (``repr`` leaves the key out: it is never printed)."""

    url: str
    api_key: str | None = field(default=None, repr=False)


def read_file(path: Path, *, required: bool) -> dict[str, str]:
    """The config file's values; a missing default file is simply empty, a named one an error."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise CliError(Exit.usage, f"config file {path} does not exist") from None
        return {}
    except OSError as exc:
        raise CliError(Exit.usage, f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8", errors="replace"))
    except tomllib.TOMLDecodeError as exc:
        raise CliError(Exit.usage, f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - FILE_KEYS)
    if unknown:
        raise CliError(
            Exit.usage,
            f"config file {path}: unknown setting {', '.join(unknown)} (known: url, api_key)",
        )
    for name, value in data.items():
        if not isinstance(value, str) or not value:
            raise CliError(Exit.usage, f"config file {path}: {name} must be a non-empty string")
    return dict(data)


def resolve(
    url: str | None,
    api_key: str | None,
    config: str | None,
    env: Mapping[str, str] | None = None,
) -> Target:
    """The target from flags > environment > config file; no URL anywhere is a usage error."""
    env = os.environ if env is None else env
    named = config or env.get(CONFIG_ENV)
    path = Path(named).expanduser() if named else default_config_path(env)
    file = read_file(path, required=bool(named))
    final_url = url or env.get(URL_ENV) or file.get("url")
    if not final_url:
        raise CliError(
            Exit.usage,
            f'no central URL: pass --url, set {URL_ENV}, or put url = "http://..." in {path}',
        )
    if not final_url.startswith(("http://", "https://")):
        raise CliError(Exit.usage, f"central URL {final_url!r} must start with http:// or https://")
    final_key = api_key or env.get(KEY_ENV) or file.get("api_key") or None
    return Target(final_url.rstrip("/"), final_key)
