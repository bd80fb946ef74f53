"""Engine profiles: how an image takes its HTTP and P2P ports, flags, env and health probe.

Container port = host port, so an engine's URLs (which reuse the host:port the caller used) are
valid from the edge whether the engine publishes its ports or shares a network namespace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

READY_PATH = "/server/api?api_version=3&method=get_status"
LIVE_PATH = "/webui/api/service?method=get_version"
NETWORK_PATH = "/server/api?api_version=3&method=get_network_connection_status"


@dataclass(frozen=True)
class ContainerSpec:
    command: list[str] | None
    env: dict[str, str]
    # The command holds only the engine's flags: prepend the image's program when the image has
    # no ENTRYPOINT (its CMD names the program).
    flags_only: bool = False


@dataclass(frozen=True)
class EngineProfile:
    name: str
    style: str  # "flags" | "acestream-http-proxy" | "env-ports"
    ready_path: str = READY_PATH
    live_path: str = LIVE_PATH

    def spec(self, http_port: int, p2p_port: int, extra_args: Sequence[str]) -> ContainerSpec:
        extra = list(extra_args)
        if self.style == "flags":
            # The simulator and plain engine images take the engine's own command line.
            flags = ["--http-port", str(http_port), "--port", str(p2p_port), "--bind-all"]
            return ContainerSpec(command=[*flags, *extra], env={}, flags_only=True)
        if self.style == "acestream-http-proxy":
            # martinbjeldbak/acestream-http-proxy: the engine listens on 6878 and reads extra
            # engine flags from EXTRA_FLAGS; ALLOW_REMOTE_ACCESS adds --bind-all.
            flags = ["--http-port", str(http_port), "--port", str(p2p_port), *extra]
            return ContainerSpec(
                command=None,
                env={"ALLOW_REMOTE_ACCESS": "yes", "EXTRA_FLAGS": " ".join(flags)},
            )
        # HTTP_PORT / HTTPS_PORT / BIND_ALL style images.
        env = {"HTTP_PORT": str(http_port), "HTTPS_PORT": str(http_port + 1), "BIND_ALL": "true"}
        env["P2P_PORT"] = str(p2p_port)
        if extra:
            env["EXTRA_FLAGS"] = " ".join(extra)
        return ContainerSpec(command=None, env=env)


PROFILES: dict[str, EngineProfile] = {
    p.name: p
    for p in (
        EngineProfile("engine-sim", "flags"),
        EngineProfile("engine-flags", "flags"),
        EngineProfile("acestream-http-proxy", "acestream-http-proxy"),
        EngineProfile("http-port-env", "env-ports"),
    )
}


def resolve(profile: str, image: str) -> EngineProfile:
    """The named profile, or for ``auto`` the one the image name suggests."""
    if profile != "auto":
        try:
            return PROFILES[profile]
        except KeyError:
            raise ValueError(
                f"unknown engine profile {profile!r}; known: auto, {', '.join(PROFILES)}"
            ) from None
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    if repo.endswith("acestream-http-proxy"):
        return PROFILES["acestream-http-proxy"]
    if "engine-sim" in repo:
        return PROFILES["engine-sim"]
    return PROFILES["http-port-env"]
