"""Player-side checks of a live channel, shared by tests/video and bench/video_check.py.

A viewer is captured as a player would receive it (TS over one HTTP response, or HLS by polling
the playlist and fetching segments in order), with the wall time each byte arrived. Then
Debian's ffmpeg/ffprobe judge the bytes: decode errors, timestamp discontinuities per stream,
and when the first frame a decoder can show had fully arrived.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import httpx

from tests.video import tsparse

TS = 188
FFMPEG = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error"]
# A step between consecutive DTS beyond this (seconds) is a discontinuity; one frame is 40 ms.
MAX_DTS_STEP_S = 0.1


@dataclass
class Capture:
    """Bytes a viewer received; ``arrivals[i]`` = (end offset, seconds after the request)."""

    label: str
    data: bytearray = field(default_factory=bytearray)
    arrivals: list[tuple[int, float]] = field(default_factory=list)
    segment_starts: list[int] = field(default_factory=list)  # HLS: offset of each segment
    error: str = ""

    def add(self, part: bytes, t: float) -> None:
        self.data += part
        self.arrivals.append((len(self.data), t))

    def arrived_at(self, offset: int) -> float:
        """Seconds after the request when byte ``offset`` had arrived."""
        i = bisect_left([end for end, _ in self.arrivals], offset + 1)
        return self.arrivals[min(i, len(self.arrivals) - 1)][1]


def capture_ts(url: str, seconds: float, label: str = "ts") -> Capture:
    """Read a TS playback URL for ``seconds`` of wall time (following the engine's redirects)."""
    cap = Capture(label)
    t0 = time.monotonic()
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(10, read=40), follow_redirects=True) as c,
            c.stream("GET", url) as r,
        ):
            if r.status_code != 200:
                cap.error = f"HTTP {r.status_code}: {r.read()[:200]!r}"
                return cap
            for part in r.iter_raw():
                cap.add(part, time.monotonic() - t0)
                if time.monotonic() - t0 >= seconds:
                    break
    except httpx.HTTPError as exc:
        cap.error = repr(exc)
    return cap


def capture_hls(url: str, media_seconds: float, label: str = "hls", limit: float = 120) -> Capture:
    """Play a live HLS playlist like a player: start 3 segments from the live edge, then fetch
    each new segment in order until ``media_seconds`` of media are in (or ``limit`` passes)."""
    cap = Capture(label)
    t0 = time.monotonic()
    got = 0.0
    next_seq: int | None = None
    with httpx.Client(timeout=10, follow_redirects=True) as c:
        while got < media_seconds and time.monotonic() - t0 < limit:
            r = c.get(url)
            if r.status_code != 200:
                cap.error = f"playlist HTTP {r.status_code}: {r.text[:200]}"
                return cap
            if "#EXT-X-STREAM-INF" in r.text:  # a master playlist: play its (first) variant
                variant = next(x for x in r.text.splitlines() if x and not x.startswith("#"))
                url = urljoin(str(r.url), variant)
                continue
            first, entries = _parse_playlist(r.text)
            if next_seq is None:
                next_seq = first + max(0, len(entries) - 3)
            if next_seq < first:
                cap.error = f"fell behind the live window: wanted {next_seq}, playlist at {first}"
                return cap
            fresh = entries[next_seq - first :]
            for duration, seg_url in fresh:
                seg = c.get(urljoin(str(r.url), seg_url))
                if seg.status_code != 200:
                    cap.error = f"segment {next_seq} HTTP {seg.status_code}"
                    return cap
                cap.segment_starts.append(len(cap.data))
                cap.add(seg.content, time.monotonic() - t0)
                got += duration
                next_seq += 1
            if not fresh:
                time.sleep(0.25)
    return cap


def _parse_playlist(text: str) -> tuple[int, list[tuple[float, str]]]:
    first = 0
    entries: list[tuple[float, str]] = []
    duration = 0.0
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            first = int(line.split(":", 1)[1])
        elif line.startswith("#EXTINF:"):
            duration = float(line.split(":", 1)[1].split(",", 1)[0])
        elif line and not line.startswith("#"):
            entries.append((duration, line))
    return first, entries


@dataclass
class Verdict:
    """What ffmpeg/ffprobe made of a capture."""

    label: str
    bytes: int
    media_s: float  # video time covered (last PTS - first PTS + one frame)
    decode_errors: list[str]
    discontinuities: list[str]  # per stream: DTS going back, repeating or jumping
    first_frame_s: float  # wall time from the request until the first decodable frame arrived
    starts_with_tables: bool  # PAT, PMT, then a keyframe packet: what a joiner needs
    codecs: list[str] = field(default_factory=list)
    segments_not_at_keyframes: list[int] = field(default_factory=list)  # HLS segment indexes
    cc_breaks: list[str] = field(default_factory=list)  # continuity counter jumps on tables
    media_cc_breaks: list[str] = field(default_factory=list)  # ... on audio/video PIDs (loss)
    live_player: bool = False  # ffmpeg/ffprobe read the URL themselves (no capture, no timing)
    error: str = ""

    @property
    def clean(self) -> bool:
        return not (self.error or self.decode_errors or self.discontinuities)

    def summary(self) -> str:
        judged = (
            f"decode errors: {len(self.decode_errors)}, "
            f"discontinuities: {len(self.discontinuities)}, codecs: {'+'.join(self.codecs)}"
            + (f", error: {self.error}" if self.error else "")
        )
        if self.live_player:
            return f"{self.label} (ffmpeg/ffprobe live): {self.media_s:.1f} s of video, {judged}"
        return (
            f"{self.label}: {self.bytes / 1e6:.1f} MB, {self.media_s:.1f} s of video, "
            f"first frame after {self.first_frame_s:.3f} s, starts with PAT/PMT/keyframe: "
            f"{self.starts_with_tables}, CC breaks: {len(self.media_cc_breaks)} media + "
            f"{len(self.cc_breaks)} tables, {judged}"
        )


def judge(cap: Capture) -> Verdict:
    """Run Debian's ffmpeg and ffprobe over what the viewer received."""
    data = _whole_pes_prefix(bytes(cap.data))
    if cap.error or len(data) < 100 * TS:
        return Verdict(cap.label, len(cap.data), 0, [], [], -1, False, error=cap.error or "no data")
    with tempfile.TemporaryDirectory(prefix="acefleet-video-") as tmp:
        path = Path(tmp) / f"{cap.label}.ts"
        path.write_bytes(data)
        decode = subprocess.run(
            [*FFMPEG, "-i", str(path), "-f", "null", "-"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        packets = _probe(path, "packets", "stream_index,codec_type,pts,dts,pos", "-show_packets")
        frames = _probe(
            path,
            "frames",
            "pkt_pos",
            "-show_frames",
            "-select_streams",
            "v",
            "-read_intervals",
            "%+5",
        )
        codecs = [s.get("codec_name", "?") for s in _probe(path, "streams", "codec_name")]
    errors = [line for line in decode.stderr.splitlines() if line.strip()]
    video = [p for p in packets if p.get("codec_type") == "video"]
    media = _media_seconds(video)
    first = _first_frame_seconds(cap, frames, video)
    tables, media_breaks = _cc_breaks(data)
    return Verdict(
        cap.label,
        len(cap.data),
        media,
        errors,
        _discontinuities(packets),
        first,
        _starts_with_tables(data),
        codecs=codecs,
        segments_not_at_keyframes=[
            i for i, at in enumerate(cap.segment_starts) if not _starts_with_tables(data[at:])
        ],
        cc_breaks=tables,
        media_cc_breaks=media_breaks,
    )


def ffmpeg_view(url: str, seconds: float, label: str) -> Verdict:
    """Debian's ffmpeg and ffprobe as the players themselves, reading live (TS, or HLS through
    ffmpeg's own playlist client) for ``seconds`` of media: ffmpeg decodes ``url`` and reports
    errors, ffprobe lists the packets of ``url`` + ``-probe`` for the timestamp check. Two
    channels, because an engine's progressive session tears when two readers share it."""
    limit = seconds * 4 + 60
    show = "packet=stream_index,codec_type,pts,dts:stream=codec_name"
    probe_argv = ["ffprobe", "-v", "error", "-show_entries", show, "-of", "json"]
    # stderr to a file, not a pipe: ffmpeg never blocks on a full pipe while ffprobe runs.
    with tempfile.TemporaryFile(mode="w+") as log:
        decode = subprocess.Popen(
            [*FFMPEG, "-i", url, "-t", str(seconds), "-f", "null", "-"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            probe = subprocess.run(
                [*probe_argv, "-read_intervals", f"%+{seconds}", f"{url}-probe"],
                capture_output=True,
                text=True,
                timeout=limit,
                check=False,
            )
            decode.wait(timeout=limit)
        finally:
            if decode.poll() is None:
                decode.kill()
                decode.wait()
        log.seek(0)
        stderr = log.read()
    found = json.loads(probe.stdout or "{}")
    packets = [{k: str(v) for k, v in row.items()} for row in found.get("packets", [])]
    errors = [line for line in (stderr + probe.stderr).splitlines() if line.strip()]
    if decode.returncode:
        errors.append(f"ffmpeg exited with {decode.returncode}")
    video = [p for p in packets if p.get("codec_type") == "video"]
    codecs = [str(st.get("codec_name", "?")) for st in found.get("streams", [])]
    return Verdict(
        label,
        0,
        _media_seconds(video),
        errors,
        _discontinuities(packets),
        -1,
        False,
        codecs=codecs,
        live_player=True,
        error="" if packets else "ffprobe read no packets",
    )


def _whole_pes_prefix(data: bytes) -> bytes:
    """Drop the tail a viewer was still receiving when the capture stopped: cut at the last PAT
    (muxers write tables between PES packets), so no frame is judged half-received."""
    data = data[: len(data) - len(data) % TS]
    for pos in range(len(data) - TS, -1, -TS):
        if data[pos] == 0x47 and data[pos + 1] & 0x1F == 0 and data[pos + 2] == 0:
            return data[:pos]
    return data


def _probe(path: Path, kind: str, entries: str, *args: str) -> list[dict[str, str]]:
    """ffprobe's ``packets`` or ``frames`` as dicts of strings (absent fields are missing)."""
    show = f"{kind[:-1]}={entries}"
    out = subprocess.run(
        ["ffprobe", "-v", "error", *args, "-show_entries", show, "-of", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    rows = json.loads(out.stdout or "{}").get(kind, [])
    return [{k: str(v) for k, v in row.items()} for row in rows]


def _num(s: str | None) -> int | None:
    try:
        return int(s) if s is not None else None
    except ValueError:
        return None


def _media_seconds(video: list[dict[str, str]]) -> float:
    pts = [v for p in video if (v := _num(p.get("pts"))) is not None]
    return (max(pts) - min(pts) + 3600) / 90_000 if pts else 0.0


def _discontinuities(packets: list[dict[str, str]]) -> list[str]:
    """Per stream, DTS must rise by at most MAX_DTS_STEP_S at every packet (ffprobe unwraps)."""
    found: list[str] = []
    last: dict[str, int] = {}
    for p in packets:
        stream, dts = p.get("stream_index", "?"), _num(p.get("dts"))
        if dts is None:
            continue
        prev = last.get(stream)
        if prev is not None and not 0 < dts - prev <= MAX_DTS_STEP_S * 90_000:
            kind, pos = p.get("codec_type"), p.get("pos")
            found.append(f"stream {stream} ({kind}): DTS {prev} -> {dts} at byte {pos}")
        last[stream] = dts
    return found


def _first_frame_seconds(
    cap: Capture, frames: list[dict[str, str]], video: list[dict[str, str]]
) -> float:
    """When the first decoded frame's data had fully arrived: its packet is complete once the
    next video packet starts (or the capture's judged prefix ends)."""
    pos = _num(frames[0].get("pkt_pos")) if frames else None
    if pos is None:
        return -1.0
    starts = sorted(v for p in video if (v := _num(p.get("pos"))) is not None)
    later = [s for s in starts if s > pos]
    end = later[0] if later else len(cap.data) - 1
    return cap.arrived_at(end)


def _starts_with_tables(data: bytes) -> bool:
    """PAT, PMT, then a packet with random_access_indicator: a joiner can decode at once."""
    if len(data) < 3 * TS:
        return len(data) == 0  # nothing judged there (the capture's cut-off tail)
    pids = [((data[i * TS + 1] & 0x1F) << 8) | data[i * TS + 2] for i in range(3)]
    key = data[2 * TS + 3] & 0x20 and data[2 * TS + 4] and data[2 * TS + 5] & 0x40
    return pids[0] == 0 and pids[1] not in (0, 0x1FFF) and bool(key)


def _cc_breaks(data: bytes) -> tuple[list[str], list[str]]:
    """Continuity counter jumps after each PID's first packet, as (tables, audio/video): a jump
    on a media PID is lost data; on PAT/PMT a demuxer may drop a table it must then wait for."""
    cap = tsparse.parse(data)
    tables: list[str] = []
    media: list[str] = []
    for pid, s in sorted(cap.streams.items()):
        (media if s.pts else tables).extend(f"PID 0x{pid:x} at packet {i}" for i in s.cc_errors)
    return tables, media
