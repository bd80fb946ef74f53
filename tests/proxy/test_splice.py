"""The splice rule (proxy/splice.py) on real video: a source cut off anywhere, another source of
other timestamps joined at a keyframe, and ffmpeg decoding across the join.

``ts_report`` is the TS checker the standby and gap-fill tests use on what viewers received."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from acefleet.mpegts import NULL_PID, PACKET_SIZE, SYNC_BYTE
from proxy.splice import discontinuity_packet, null_packets, splice
from proxy.stream_buffer import StreamBuffer

VIDEO_PID = 0x100  # the clips' video PID (scripts/make-clips.sh muxes with ffmpeg's defaults)


@dataclass
class TsReport:
    packets: int = 0
    misaligned: int = 0
    cc_errors: int = 0  # continuity-counter jumps not announced by discontinuity_indicator
    marks: list[int] = field(default_factory=list)  # packet indexes with discontinuity_indicator
    nulls: int = 0
    pids: set[int] = field(default_factory=set)


def ts_report(data: bytes) -> TsReport:
    """Continuity of every PID as a demuxer checks it (ISO/IEC 13818-1 2.4.3.3): a packet with
    payload advances the counter, one without repeats it, discontinuity_indicator resets it."""
    report = TsReport()
    last: dict[int, int] = {}
    for i, at in enumerate(range(0, len(data) - PACKET_SIZE + 1, PACKET_SIZE)):
        p = data[at : at + PACKET_SIZE]
        report.packets += 1
        if p[0] != SYNC_BYTE:
            report.misaligned += 1
            continue
        pid = ((p[1] & 0x1F) << 8) | p[2]
        if pid == NULL_PID:
            report.nulls += 1
            continue
        report.pids.add(pid)
        cc = p[3] & 0x0F
        marked = bool(p[3] & 0x20) and p[4] > 0 and bool(p[5] & 0x80)
        if marked:
            report.marks.append(i)
        elif pid in last:
            expected = (last[pid] + 1) & 0x0F if p[3] & 0x10 else last[pid]
            if cc != expected:
                report.cc_errors += 1
        last[pid] = cc
    return report


def decode_problems(data: bytes, tmp: Path) -> list[str]:
    """What ffmpeg says (warnings and errors) while demuxing and decoding ``data`` whole."""
    path = tmp / "decode.ts"
    path.write_bytes(data)
    done = subprocess.run(
        ["ffmpeg", "-hide_banner", "-v", "warning", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # ffmpeg's own output side re-times what it decoded and complains when two sources' clocks
    # happen to overlap by less than its 0.1-s discontinuity threshold: not a decoding problem
    return [
        line
        for line in done.stderr.splitlines()
        if line.strip() and "non monotonically increasing dts to muxer" not in line
    ]


def frames(data: bytes, tmp: Path, stream: str = "v:0") -> int:
    """How many frames of ``stream`` (ffprobe's selector) decode."""
    path = tmp / "count.ts"
    path.write_bytes(data)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", stream, "-count_frames", "-show_entries",
         "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return int(out.stdout.split()[0])  # listed under the program and the stream: same count


def _clip(clip_dir: Path, name: str) -> bytes:
    data = (clip_dir / name).read_bytes()
    return data[: len(data) - len(data) % PACKET_SIZE]


def _indexed(data: bytes) -> StreamBuffer:
    buf = StreamBuffer(len(data) + PACKET_SIZE)
    step = PACKET_SIZE * 350
    for at in range(0, len(data), step):
        buf.append(data[at : at + step])
    return buf


def _next_frame_start(data: bytes, at: int) -> int:
    """The first packet at or after ``at`` that starts a video PES (a frame boundary)."""
    while not (data[at + 1] & 0x40 and ((data[at + 1] & 0x1F) << 8 | data[at + 2]) == VIDEO_PID):
        at += PACKET_SIZE
    return at


def _pid(packet: bytes) -> int:
    return ((packet[1] & 0x1F) << 8) | packet[2]


def _clean_cut(data: bytes, at: int) -> int:
    """The first frame boundary at or after ``at`` where every stream, audio too, starts a new
    unit: nothing of the old source is left unfinished there, whatever the encoder made."""
    pids = {_pid(data[i : i + 4]) for i in range(0, PACKET_SIZE * 2000, PACKET_SIZE)}
    streams = pids - {0, NULL_PID, 0x1000}  # PAT, null, the PMT's PID in ffmpeg's muxing
    while True:
        at = _next_frame_start(data, at)
        pending = set(streams)
        i = at
        while pending and i < len(data):
            pid = _pid(data[i : i + 4])
            if pid in pending:
                if not data[i + 1] & 0x40:
                    break  # this stream's next packet continues a unit begun before the cut
                pending.discard(pid)
            i += PACKET_SIZE
        if not pending:
            return at
        at += PACKET_SIZE


def _join(clip_dir: Path, cut_at_frame: bool, cut_after: int = 7) -> tuple[bytes, bytes, bytes]:
    """(old source cut off, the raw join, the spliced join)."""
    old, new = _clip(clip_dir, "ch01.ts"), _clip(clip_dir, "ch02.ts")
    # about 3 s of each source keeps ffmpeg's work (and the test) short
    cut = (len(old) // 5) // PACKET_SIZE * PACKET_SIZE + cut_after * PACKET_SIZE
    if cut_at_frame:
        cut = _clean_cut(old, cut)
    buf = _indexed(new)
    key = buf.keyframes[len(buf.keyframes) // 2]
    tables = buf.start_prefix(key)
    assert tables, "the clip has PAT and PMT before its keyframes"
    end = _next_frame_start(new, key + (len(new) // 5) // PACKET_SIZE * PACKET_SIZE)
    head, tail = old[:cut], new[key:end]
    return head, head + tables + tail, head + splice(tables, tail)


def _complaints(lines: list[str]) -> Counter[str]:
    """ffmpeg's complaints without what differs between runs (addresses, the file's name)."""
    return Counter(re.sub(r"0x[0-9a-f]+|\S*decode\.ts", "_", line) for line in lines)


def test_spliced_join_decodes_without_a_warning(clip_dir: Path, tmp_path: Path) -> None:
    head, raw, spliced = _join(clip_dir, cut_at_frame=True)
    assert decode_problems(spliced, tmp_path) == []
    report = ts_report(spliced)
    assert report.cc_errors == 0
    assert report.misaligned == 0
    # one mark per PID of the new source, all before its first packet
    assert len(report.marks) == len(report.pids)
    # the same join without the rule breaks continuity (whether ffmpeg also flags a frame depends
    # on the clips' encoding, which differs between machines)
    assert ts_report(raw).cc_errors > 0
    # every frame of both parts is decoded: the new part's keyframe first
    assert frames(spliced, tmp_path) >= frames(head, tmp_path) + 1


@pytest.mark.parametrize("cut_after", [7, 70, 77, 224, 245, 301, 364])
def test_a_source_cut_mid_frame_costs_only_that_frame(
    clip_dir: Path, tmp_path: Path, cut_after: int
) -> None:
    # an engine dies anywhere: its last unit (a video frame or an audio frame) is cut off, which
    # nobody can mend afterwards as its first bytes are already with the player. Alone, at the
    # end of a file, ffmpeg's demuxer drops that unit unseen; followed by the new source it hands
    # it to the decoder, which says so once. Where the cut lands depends on how the clip was
    # encoded (x264's output differs between machines), so several cuts are tried.
    head, _, spliced = _join(clip_dir, cut_at_frame=False, cut_after=cut_after)
    added = _complaints(decode_problems(spliced, tmp_path)) - _complaints(
        decode_problems(head, tmp_path)
    )
    # nothing from the demuxer: the splice itself is clean TS
    assert not [line for line in added if line.startswith("[mpegts")], added
    # at most the one cut-off unit: one video frame flagged, or one audio packet that fails to
    # decode. The AAC decoder explains a failed packet in a varying number of lines (what it
    # reads in the garbage differs with where the cut lands), so packets are counted, not lines.
    video = added["_: corrupt decoded frame in stream 0"]
    audio_lines = sum(n for line, n in added.items() if "aac" in line or "stream #0:1" in line)
    audio_failed = sum(n for line, n in added.items() if line.startswith("Error while decoding"))
    assert video <= 1, added
    assert audio_failed <= 1, added
    assert audio_lines <= 1 or audio_failed == 1, added  # many lines: all about that one packet
    assert sum(added.values()) == video + audio_lines, added
    assert not (video and audio_lines), added
    # and every frame of both sources reaches the player: none of the new source is lost
    new_part = spliced[len(head) :]
    assert frames(spliced, tmp_path) == frames(head, tmp_path) + frames(new_part, tmp_path)
    # An audio frame cut off makes one more victim: the ADTS parser reads the declared length of
    # the cut frame across the unit boundary, so it swallows the new source's first audio frame
    # (measured: its PTS is the one missing). The bytes of the cut frame are already with the
    # player, so no splice can prevent it; no other audio frame may be lost.
    audio = "a:0"
    lost = (
        frames(head, tmp_path, audio)
        + frames(new_part, tmp_path, audio)
        - frames(spliced, tmp_path, audio)
    )
    assert lost <= (1 if audio_lines else 0), (lost, added)
    assert ts_report(spliced).cc_errors == 0


def test_units_begun_before_the_keyframe_are_dropped() -> None:
    # a PID whose first packet continues a PES is skipped until its next unit start
    pes_start = bytes((SYNC_BYTE, 0x41, 0x01, 0x13)) + b"\x00" * 184  # PID 0x101, PUSI, CC 3
    middle = bytes((SYNC_BYTE, 0x01, 0x01, 0x12)) + b"\x00" * 184  # PID 0x101, CC 2
    out = splice(b"", middle + null_packets(2) + pes_start)
    assert out == discontinuity_packet(0x101, 2) + pes_start
    report = ts_report(middle + out)
    assert report.cc_errors == 0
    assert report.marks == [1]
