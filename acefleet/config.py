"""One way for every service to take its configuration: flags > environment > TOML file > defaults.

A service declares a flat ``pydantic_settings.BaseSettings`` subclass (with an ``env_prefix``
such as ``ACEFLEET_PROXY_`` and a ``description`` on every field); :func:`load` derives the
``--help`` text and the flags from it, so flags, env names and docs never drift apart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, ValidationError
from pydantic_settings import BaseSettings, InitSettingsSource, NoDecode, PydanticBaseSettingsSource

S = TypeVar("S", bound=BaseSettings)


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
"""A list option written ``a,b,c`` in flags and env, or as a TOML array in the file."""


def _is_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return bool in typing.get_args(annotation) and all(
            a in (bool, type(None)) for a in typing.get_args(annotation)
        )
    return False


def build_parser(cls: type[BaseSettings], prog: str, description: str) -> argparse.ArgumentParser:
    prefix = str(cls.model_config.get("env_prefix", ""))
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=f"Every option can also be set as {prefix}<NAME> in the environment or in the "
        "TOML file given by --config; flags win over the environment, which wins over the file.",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the configuration, print it as JSON and exit (0 valid, 2 invalid)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML file with options (keys as below, with underscores) [env {prefix}CONFIG]",
    )
    for name, field in cls.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = f"{prefix}{name.upper()}"
        default = field.default if field.default is not None else "unset"
        help_text = f"{field.description or ''} (default: {default}) [env {env}]"
        if _is_bool(field.annotation):
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag, dest=name, default=argparse.SUPPRESS, metavar=name.upper(), help=help_text
            )
    return parser


def _read_file(path: str) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SystemExit(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SystemExit(f"config file {path} is not valid TOML: {exc}") from None


_SECRET_WORDS = ("key", "token", "password", "secret")
# ...but an option naming a file (tls_key_file) holds a path, which the output should show
_PATH_SUFFIX = "_file"


def redacted(values: dict[str, Any]) -> dict[str, Any]:
    """The settings with every secret-looking option masked, fit to print or log."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        secret = any(word in name for word in _SECRET_WORDS) and not name.endswith(_PATH_SUFFIX)
        if value and secret:
            out[name] = ["***"] * len(value) if isinstance(value, list) else "***"
        else:
            out[name] = value
    return out


def load(cls: type[S], argv: Sequence[str] | None, *, prog: str, description: str) -> S:
    """Parse ``argv`` and build the settings; exits with one clear message per bad option."""
    parser = build_parser(cls, prog, description)
    ns = vars(parser.parse_args(argv))
    prefix = str(cls.model_config.get("env_prefix", ""))
    check_only = ns.pop("check_config", False)
    config_path = ns.pop("config", None) or os.environ.get(f"{prefix}CONFIG")
    file_values = _read_file(config_path) if config_path else {}
    unknown = sorted(set(file_values) - set(cls.model_fields))
    if unknown:
        raise SystemExit(f"config file {config_path}: unknown option(s) {', '.join(unknown)}")

    def sources(
        _cls: type[BaseSettings],
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # flags (init kwargs) win over the environment, which wins over the file.
        return (init_settings, env_settings, InitSettingsSource(settings_cls, file_values))

    layered = type(cls.__name__, (cls,), {"settings_customise_sources": classmethod(sources)})
    try:
        settings = typing.cast(S, layered(**ns))
    except ValidationError as exc:
        lines = [f"{prog}: invalid configuration:"]
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            if where:
                lines.append(
                    f"  --{where.replace('_', '-')} / {prefix}{where.upper()}: {err['msg']}"
                )
            else:  # a rule across several options
                lines.append(f"  {err['msg']}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
    if check_only:
        print(json.dumps(redacted(settings.model_dump(mode="json")), indent=2))
        raise SystemExit(0)
    return settings
