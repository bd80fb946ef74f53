"""Docker calls for engines and VPN tunnel containers, run on a small thread pool so the event
loop never blocks.

Errors are translated into :class:`DockerError` with a stable code the API and the breaker show.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from acefleet import logs
from orchestrator.agent.engine_record import LABEL_HOST, LABEL_MANAGED

log = logs.get(__name__)
T = TypeVar("T")


class DockerError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    state: str  # running, exited, created, ...
    labels: dict[str, str]


@dataclass(frozen=True)
class TunnelFacts:
    """What ``inspect`` says of a running tunnel container."""

    address: str | None  # IP on the tunnel network (None: not attached)
    started_at: datetime | None  # its last start, by Docker's clock (None: never started)


@dataclass(frozen=True)
class CreateRequest:
    name: str
    image: str
    command: list[str] | None
    env: dict[str, str]
    labels: dict[str, str]
    ports: list[int]  # published TCP ports (container port = host port); P2P also on UDP
    udp_ports: list[int]
    bind_host: str
    network_container: str
    memory_mb: int
    flags_only: bool


@dataclass(frozen=True)
class TunnelCreateRequest:
    """A VPN tunnel (Gluetun) container: its own network namespace on ``network``."""

    name: str
    image: str
    env: dict[str, str]
    labels: dict[str, str]
    network: str
    cap_add: list[str]
    devices: list[str]  # host paths, passed through at the same path


def _translate(exc: Exception, what: str) -> DockerError:
    if isinstance(exc, docker.errors.ImageNotFound):
        return DockerError(
            "image_missing", f"{what}: image not found locally (load or build it on this host)"
        )
    if isinstance(exc, docker.errors.NotFound):
        return DockerError("not_found", f"{what}: {exc.explanation}")
    if isinstance(exc, docker.errors.APIError):
        text = str(exc.explanation or exc)
        if "port is already allocated" in text or "address already in use" in text:
            return DockerError("port_conflict", f"{what}: {text}")
        if exc.status_code == 409:
            return DockerError("conflict", f"{what}: {text}")
        return DockerError("docker_error", f"{what}: {text}")
    if isinstance(exc, requests.exceptions.RequestException | docker.errors.DockerException):
        return DockerError("docker_unavailable", f"{what}: Docker daemon unreachable ({exc})")
    return DockerError("docker_error", f"{what}: {exc!r}")


class DockerOps:
    def __init__(self, url: str, timeout_s: float, host: str) -> None:
        self.url = url
        self.timeout = timeout_s
        self.host = host
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="docker")
        self._api: Any = None
        self._lock = threading.Lock()
        self._stream: Any = None  # the live event stream, closed by stop_events

    def _client(self) -> Any:
        with self._lock:
            if self._api is None:
                self._api = docker.APIClient(base_url=self.url, timeout=int(self.timeout))
            return self._api

    async def _run(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        def call() -> T:
            try:
                return fn(self._client(), *args)
            except Exception as exc:
                raise _translate(exc, what) from exc

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._api is not None:
            with contextlib.suppress(Exception):
                self._api.close()

    # --- queries ---------------------------------------------------------------------------

    async def list_engines(self, *, any_host: bool = False) -> list[Container]:
        """Our host's engines (all states); with ``any_host`` every acefleet engine."""
        label = [f"{LABEL_MANAGED}=true"]
        if not any_host:
            label.append(f"{LABEL_HOST}={self.host}")

        def call(api: Any) -> list[Container]:
            out = []
            for c in api.containers(all=True, filters={"label": label}):
                out.append(
                    Container(
                        id=c["Id"],
                        name=(c.get("Names") or ["/" + c["Id"][:12]])[0].lstrip("/"),
                        state=c.get("State", "unknown"),
                        labels=c.get("Labels") or {},
                    )
                )
            return out

        return await self._run("list containers", call)

    async def list_labelled(self, label: str) -> list[Container]:
        """Our host's containers (all states) carrying ``label`` (``key`` or ``key=value``)."""

        def call(api: Any) -> list[Container]:
            filters = {"label": [f"{LABEL_HOST}={self.host}", label]}
            return [
                Container(
                    id=c["Id"],
                    name=(c.get("Names") or ["/" + c["Id"][:12]])[0].lstrip("/"),
                    state=c.get("State", "unknown"),
                    labels=c.get("Labels") or {},
                )
                for c in api.containers(all=True, filters=filters)
            ]

        return await self._run("list containers", call)

    async def tunnel_facts(self, name: str, network: str) -> TunnelFacts:
        """The container's address on ``network`` and when it last started: a restart (policy
        or ``docker restart``) changes the start, and gives it a new network namespace."""

        def call(api: Any) -> TunnelFacts:
            info = api.inspect_container(name)
            networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
            ip = (networks.get(network) or {}).get("IPAddress")
            started = str((info.get("State") or {}).get("StartedAt") or "")
            return TunnelFacts(str(ip) if ip else None, _docker_time(started))

        return await self._run(f"inspect {name}", call)

    async def published_ports(self) -> set[int]:
        """Host ports published by any running container (ours, other agents', foreign)."""

        def call(api: Any) -> set[int]:
            return {
                int(p["PublicPort"])
                for c in api.containers()
                for p in c.get("Ports") or []
                if p.get("PublicPort")
            }

        return await self._run("list ports", call)

    async def image_command(self, image: str) -> tuple[list[str], list[str]]:
        """(entrypoint, cmd) of a local image; ``image_missing`` when it is not there."""

        def call(api: Any) -> tuple[list[str], list[str]]:
            cfg = api.inspect_image(image).get("Config") or {}
            return list(cfg.get("Entrypoint") or []), list(cfg.get("Cmd") or [])

        return await self._run(f"inspect image {image}", call)

    async def state(self, name: str) -> str | None:
        def call(api: Any) -> str | None:
            try:
                return str(api.inspect_container(name)["State"]["Status"])
            except docker.errors.NotFound:
                return None

        return await self._run(f"inspect {name}", call)

    # --- changes ---------------------------------------------------------------------------

    async def create(self, req: CreateRequest) -> str:
        entry, cmd = await self.image_command(req.image)
        command = req.command
        if command is not None and req.flags_only and not entry and cmd:
            command = [cmd[0], *command]

        def call(api: Any) -> str:
            host_cfg: dict[str, Any] = {"restart_policy": {"Name": "unless-stopped"}}
            if req.memory_mb:
                host_cfg["mem_limit"] = f"{req.memory_mb}m"
            ports: list[Any] | None = None
            if req.network_container:
                host_cfg["network_mode"] = f"container:{req.network_container}"
            else:
                bindings: dict[Any, Any] = {p: (req.bind_host, p) for p in req.ports}
                bindings.update({f"{p}/udp": (req.bind_host, p) for p in req.udp_ports})
                host_cfg["port_bindings"] = bindings
                ports = [*req.ports, *((p, "udp") for p in req.udp_ports)]
            created = api.create_container(
                req.image,
                command=command,
                name=req.name,
                environment=req.env,
                labels=req.labels,
                ports=ports,
                host_config=api.create_host_config(**host_cfg),
            )
            return _start_or_remove(api, str(created["Id"]))

        return await self._run(f"create {req.name}", call)

    async def create_tunnel(self, req: TunnelCreateRequest) -> str:
        """Create and start a tunnel container (restart policy unless-stopped)."""

        def call(api: Any) -> str:
            host_cfg = api.create_host_config(
                restart_policy={"Name": "unless-stopped"},
                cap_add=req.cap_add,
                devices=[f"{d}:{d}:rwm" for d in req.devices],
                network_mode=req.network,
            )
            created = api.create_container(
                req.image,
                name=req.name,
                environment=req.env,
                labels=req.labels,
                host_config=host_cfg,
            )
            return _start_or_remove(api, str(created["Id"]))

        return await self._run(f"create {req.name}", call)

    async def remove(self, name: str) -> None:
        def call(api: Any) -> None:
            try:
                api.remove_container(name, force=True)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                # Already being removed by an earlier call: that is what we want.
                if exc.status_code == 409 and "in progress" in str(exc.explanation):
                    return
                raise

        await self._run(f"remove {name}", call)

    # --- events ----------------------------------------------------------------------------

    def watch_events(
        self, on_event: Callable[[dict[str, Any]], None], stop: threading.Event
    ) -> threading.Thread:
        """Stream container events of our engines into ``on_event`` (from a thread)."""

        def run() -> None:
            backoff = 0.5
            while not stop.is_set():
                api = None
                try:
                    # No read timeout: the stream is idle whenever nothing happens.
                    no_timeout: Any = None
                    api = docker.APIClient(base_url=self.url, timeout=no_timeout)
                    stream = api.events(
                        decode=True,
                        filters={
                            "type": "container",
                            "label": [f"{LABEL_MANAGED}=true", f"{LABEL_HOST}={self.host}"],
                        },
                    )
                    self._stream = stream
                    backoff = 0.5
                    for event in stream:
                        if stop.is_set():
                            break
                        on_event(event)
                except Exception as exc:
                    if stop.is_set():
                        break
                    log.warning("docker_events_lost", error=str(exc), retry_in_s=backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 10)
                finally:
                    if api is not None:
                        with contextlib.suppress(Exception):
                            api.close()

        thread = threading.Thread(target=run, name="docker-events", daemon=True)
        thread.start()
        return thread

    def stop_events(self) -> None:
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()


def _docker_time(text: str) -> datetime | None:
    """Docker's RFC 3339 time (nanoseconds, ``Z``); its zero time (never) is None."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.year > 1 else None


def _start_or_remove(api: Any, cid: str) -> str:
    """Start a created container; one that cannot start is removed, not left behind as a
    created container holding its name (and, for an engine, its port labels)."""
    try:
        api.start(cid)
    except Exception:
        with contextlib.suppress(Exception):
            api.remove_container(cid, force=True)
        raise
    return cid
