"""Where central is, which key to use and which CA to trust: flags, then ``ACEFLEET_URL``/
``ACEFLEET_API_KEY``/``ACEFLEET_CA_FILE``, then the config file (``~/.config/acefleet/cli.toml``:
``url = "..."``, ``api_key = "..."``, ``ca_file = "..."``)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from acefleetctl.errors import CliError, Exit

URL_ENV = "ACEFLEET_URL"
KEY_ENV = "ACEFLEET_API_KEY"
CA_ENV = "ACEFLEET_CA_FILE"
CONFIG_ENV = "ACEFLEET_CLI_CONFIG"
FILE_KEYS = frozenset({"url", "api_key", "ca_file"})


def default_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "acefleet" / "cli.toml"


@dataclass(frozen=True)
class Target:
    """Central's base URL, the API key (``repr`` leaves the key out: it is never printed) and
    the CA file an https central is verified against (None: the system's trust store)."""

    url: str
    api_key: str | None = field(default=None, repr=False)
    ca_file: str | None = None


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
            f"config file {path}: unknown setting {', '.join(unknown)} "
            "(known: url, api_key, ca_file)",
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
    ca_file: str | None = None,
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
    final_ca = ca_file or env.get(CA_ENV) or file.get("ca_file") or None
    if final_ca is not None:
        final_ca = str(Path(final_ca).expanduser())
        if not os.access(final_ca, os.R_OK):
            raise CliError(Exit.usage, f"CA file {final_ca} does not exist or is not readable")
    return Target(final_url.rstrip("/"), final_key, final_ca)
