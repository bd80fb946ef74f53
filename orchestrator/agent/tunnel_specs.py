"""The VPN tunnels an edge runs, as the operator declares them (``vpn_tunnels_file``).

Rules:

1. The file is a JSON list of tunnel specs; it holds VPN credentials, so it must be readable by
   its owner only (mode 0600 or stricter): a group- or world-readable file is refused.
2. Each spec names the tunnel (``^[a-z][a-z0-9-]{0,15}$``, unique), its Gluetun provider and VPN
   type, non-empty ``credentials`` (Gluetun env, kept secret), more Gluetun ``env``, how many
   engines it may carry (1..32), whether to ask for a forwarded port, and how often to rotate it.
3. Anything else (unreadable file, bad JSON, an unknown key, a missing field) is refused with an
   error naming the file and the tunnel, so the agent never starts half-configured.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,15}$"
# Env the agent sets itself on a tunnel container; a spec may not override it.
RESERVED_ENV = frozenset(
    {
        "VPN_SERVICE_PROVIDER",
        "VPN_TYPE",
        "VPN_PORT_FORWARDING",
        "HTTP_CONTROL_SERVER_ADDRESS",
        "HTTP_CONTROL_SERVER_AUTH_DEFAULT_ROLE",
        "FIREWALL_INPUT_PORTS",
    }
)


class TunnelSpecError(ValueError):
    """The tunnels file cannot be used; the message says which file, tunnel and field."""


class TunnelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="Unique per edge")
    provider: str = Field(min_length=1, description="Gluetun VPN_SERVICE_PROVIDER")
    vpn_type: Literal["wireguard", "openvpn"] = "wireguard"
    credentials: dict[str, SecretStr] = Field(description="Gluetun env holding the secrets")
    env: dict[str, str] = Field(default_factory=dict, description="More Gluetun env")
    engines: int = Field(default=4, ge=1, le=32, description="Engines this tunnel may carry")
    port_forwarding: bool = True
    rotate_after_s: float = Field(default=0, ge=0, description="Rotate this often (0: never)")

    @field_validator("credentials")
    @classmethod
    def _credentials_set(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        if not value:
            raise ValueError("credentials are required (the Gluetun env of this tunnel's login)")
        for key, secret in value.items():
            if not secret.get_secret_value().strip():
                raise ValueError(f"credential {key} is empty")
        _check_env_names(value)
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        _check_env_names(value)
        return value

    def container_env(self) -> dict[str, str]:
        """The spec's own Gluetun env: credentials, extra env, provider and type."""
        env = {k: v.get_secret_value() for k, v in self.credentials.items()}
        env.update(self.env)
        env["VPN_SERVICE_PROVIDER"] = self.provider
        env["VPN_TYPE"] = self.vpn_type
        env["VPN_PORT_FORWARDING"] = "on" if self.port_forwarding else "off"
        return env


def _check_env_names(env: Iterable[str]) -> None:
    for key in env:
        if not key or not key.replace("_", "A").isalnum() or not key.isupper():
            raise ValueError(f"{key!r} is not an environment variable name (UPPER_CASE)")
        if key in RESERVED_ENV:
            raise ValueError(f"{key} is set by the agent, not by the tunnel spec")


def load(path: str) -> list[TunnelSpec]:
    """Read and check the tunnels file (rules 1 to 3); raises :class:`TunnelSpecError`."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise TunnelSpecError(f"vpn_tunnels_file {path}: cannot read it ({exc.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TunnelSpecError(
            f"vpn_tunnels_file {path} holds VPN credentials and is group/world accessible "
            f"(mode {stat.S_IMODE(mode):04o}): chmod 600 it"
        )
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise TunnelSpecError(f"vpn_tunnels_file {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, list) or not raw:
        raise TunnelSpecError(f"vpn_tunnels_file {path} must be a non-empty JSON list of tunnels")
    specs: list[TunnelSpec] = []
    for i, item in enumerate(raw):
        label = f"tunnel {i}" + (
            f" ({item['name']!r})" if isinstance(item, dict) and "name" in item else ""
        )
        try:
            specs.append(TunnelSpec.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
            )
            raise TunnelSpecError(f"vpn_tunnels_file {path}, {label}: {problems}") from None
    names = [s.name for s in specs]
    doubles = sorted({n for n in names if names.count(n) > 1})
    if doubles:
        raise TunnelSpecError(f"vpn_tunnels_file {path}: tunnel names must be unique: {doubles}")
    return specs
