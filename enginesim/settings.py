"""The simulator's options and its timing profiles.

Engine-compatible flags (``--http-port``, ``--port``, ``--bind-all``) sit next to acefleet's own
options. Every delay has its own option; an unset delay takes its value from ``--timing``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from acefleet.config import CommaList

MB = 1_000_000


@dataclass(frozen=True)
class Timing:
    """Resolved delays in seconds (sizes in bytes); see ENGINE_API.md "Timing profile"."""

    startup_delay: float
    json_delay: float
    unknown_id_delay: float
    unknown_infohash_delay: float
    stat_empty: float
    prebuffer: float
    burst_bytes: int
    burst_seconds: float
    idle_timeout: float
    hls_segment_seconds: float


PROFILES: dict[str, Timing] = {
    # What a real engine does (ENGINE_API.md); 8-10 s from start to "dl".
    "realistic": Timing(
        startup_delay=10.0,
        json_delay=0.5,
        unknown_id_delay=4.0,
        unknown_infohash_delay=28.0,
        stat_empty=0.5,
        prebuffer=8.0,
        burst_bytes=20 * MB,
        burst_seconds=12.0,
        idle_timeout=30.0,
        hls_segment_seconds=5.0,
    ),
    # Same shapes, tens of milliseconds, for tests.
    "fast": Timing(
        startup_delay=0.0,
        json_delay=0.02,
        unknown_id_delay=0.05,
        unknown_infohash_delay=0.1,
        stat_empty=0.02,
        prebuffer=0.05,
        burst_bytes=256 * 1024,
        burst_seconds=0.1,
        idle_timeout=2.0,
        hls_segment_seconds=1.0,
    ),
}


class SimSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACEFLEET_SIM_", extra="forbid")

    http_port: int = Field(6878, ge=1, le=65535, description="HTTP API port, as the engine's")
    port: int = Field(8621, ge=1, le=65535, description="P2P port (accepted, unused)")
    api_port: int = Field(62062, ge=1, le=65535, description="legacy line API port (unused)")
    host: str = Field("0.0.0.0", description="address to listen on (the engine listens on all)")
    bind_all: bool = Field(
        False, description="serve callers outside --trusted-networks (else 403, 'deny access')"
    )
    trusted_networks: CommaList = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="networks served without --bind-all",
    )
    timing: Literal["realistic", "fast"] = Field("realistic", description="timing profile")
    startup_delay: float | None = Field(
        None, ge=0, description="seconds before the HTTP port opens (engine boot)"
    )
    json_delay: float | None = Field(None, ge=0, description="format=json answer delay, s")
    unknown_id_delay: float | None = Field(
        None, ge=0, description="delay before 'failed to load content' by id/url, s"
    )
    unknown_infohash_delay: float | None = Field(
        None, ge=0, description="delay before 'failed to load content' by infohash/magnet, s"
    )
    stat_empty: float | None = Field(None, ge=0, description="seconds stat_url answers {}")
    prebuffer: float | None = Field(
        None, ge=0, description="prebuffering: playback response headers held this long, s"
    )
    burst_bytes: int | None = Field(None, ge=0, description="initial burst after prebuffer")
    burst_seconds: float | None = Field(None, ge=0, description="the burst is spread over this")
    idle_timeout: float | None = Field(
        None, gt=0, description="a session with no reader ends after this many seconds"
    )
    hls_segment_seconds: float | None = Field(None, gt=0, description="HLS segment length, s")
    bitrate: int = Field(4_000_000, ge=100_000, le=100_000_000, description="stream bit/s")
    pace_interval: float = Field(
        0.05, gt=0, le=1, description="seconds between paced writes to a reader"
    )
    media: Literal["auto", "synthetic", "clips"] = Field(
        "auto", description="media source: synthetic TS, real clips, or clips when present"
    )
    clip_dir: Path | None = Field(None, description="directory of *.ts clips for --media clips")
    chaos: bool = Field(False, description="enable fault injection at POST /_sim/faults")
    log_level: str = Field("info", description="debug, info, warning or error")
    log_format: Literal["auto", "json", "console"] = Field("auto", description="log format")

    def resolved_timing(self) -> Timing:
        """The profile with every explicitly set delay applied on top."""
        overrides = {
            f.name: value for f in fields(Timing) if (value := getattr(self, f.name)) is not None
        }
        return replace(PROFILES[self.timing], **overrides)
