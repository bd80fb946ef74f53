"""Write HLS playlists (RFC 8216, version 3) for a live channel: no EXT-X-ENDLIST, ever.

The master playlist names one variant; the media playlist lists segments with their
EXT-X-PROGRAM-DATE-TIME and an EXT-X-DISCONTINUITY where the upstream was replaced (or where the
caller forces one for a particular player). EXTINF carries 3 decimals; the segmenter already keeps
every duration <= the target duration, which RFC 8216 requires of the rounded value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC

from proxy.hls.segmenter import Segment

VERSION = 3
DEFAULT_BANDWIDTH = 5_000_000  # bits/s announced before any segment was measured


def master_playlist(variant_uri: str, bandwidth: int) -> bytes:
    """A master playlist with the single variant ``variant_uri`` (relative to the master)."""
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        f"#EXT-X-STREAM-INF:BANDWIDTH={bandwidth if bandwidth > 0 else DEFAULT_BANDWIDTH}",
        variant_uri,
    ]
    return ("\n".join(lines) + "\n").encode()


def media_playlist(
    segments: Sequence[Segment],
    *,
    target_duration: int,
    media_sequence: int,
    discontinuity_sequence: int,
    uri: Callable[[Segment], str],
    forced_discontinuity_seq: int | None = None,
) -> bytes:
    """A live media playlist of ``segments`` (oldest first; at least one)."""
    if not segments:
        raise ValueError("a media playlist needs at least one segment")
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{target_duration}",
        f"#EXT-X-MEDIA-SEQUENCE:{media_sequence}",
    ]
    if discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}")
    for seg in segments:
        if seg.discontinuity or seg.seq == forced_discontinuity_seq:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_iso_ms(seg)}")
        lines.append(f"#EXTINF:{seg.duration_s:.3f},")
        lines.append(uri(seg))
    return ("\n".join(lines) + "\n").encode()


def _iso_ms(seg: Segment) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, the form every player parses."""
    t = seg.program_time.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
