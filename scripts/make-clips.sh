#!/usr/bin/env bash
# Generate the simulator's source clips: one short MPEG-TS loop per channel, H.264 + AAC, with the
# channel number and a running clock burned into a moving test pattern and a tone per channel.
#   scripts/make-clips.sh OUTDIR [CHANNELS]     (CHANNELS defaults to 6)
# Idempotent: a clip is re-encoded only when it is missing or its recipe changed (a .recipe stamp
# sits next to it); files are written under a temporary name and renamed, so a reader never sees
# half a clip. enginesim/clip_feed.py loops these clips as endless live streams (docs/video.md).
#
# Why these numbers: 25 fps with a GOP of 32 frames (1.28 s) and 48 kHz AAC (1024-sample frames,
# 21.33 ms) line up every 0.64 s, so a 10.24 s loop holds exactly 8 GOPs, 256 video frames and 480
# audio frames: the feed can repeat it with no gap or overlap in either stream. CBR with filler
# keeps the bitrate near 3 Mbit/s (about 4 MB per clip). One audio frame per PES
# (-pes_payload_size 0) lets the feed trim the encoder's extra priming frame at the loop point.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

outdir=${1:?usage: scripts/make-clips.sh OUTDIR [CHANNELS]}
channels=${2:-6}
[[ $channels =~ ^[1-9][0-9]?$ ]] || die "CHANNELS must be 1-99, not '$channels'"
need ffmpeg ffmpeg
font_dir=/usr/share/fonts/truetype/dejavu
for f in DejaVuSans-Bold.ttf DejaVuSansMono-Bold.ttf; do
  [[ -r $font_dir/$f ]] || die "$font_dir/$f is missing: apt-get install -y fonts-dejavu-core"
done
mkdir -p "$outdir"

# Distinct tones (A4 up a major scale) and hues, so channels differ to the ear and to the eye.
tones=(440 494 554 587 659 740 831 880 988 1109)

ffmpeg_version=$(ffmpeg -version | head -n1)
made=0
for ((i = 1; i <= channels; i++)); do
  name=$(printf 'ch%02d' "$i")
  tone=${tones[$(((i - 1) % ${#tones[@]}))]}
  hue=$(((i - 1) * 47 % 360))
  video="testsrc2=size=1280x720:rate=25,hue=h=${hue}"
  video+=",drawtext=fontfile=${font_dir}/DejaVuSans-Bold.ttf:text='acefleet CH ${i}'"
  video+=":fontsize=96:fontcolor=white:box=1:boxcolor=black@0.65:boxborderw=16:x=48:y=48"
  video+=",drawtext=fontfile=${font_dir}/DejaVuSansMono-Bold.ttf:text='%{pts\\:hms}'"
  video+=":fontsize=80:fontcolor=yellow:box=1:boxcolor=black@0.65:boxborderw=16:x=48:y=h-150"
  video+=",drawtext=fontfile=${font_dir}/DejaVuSans-Bold.ttf:text='${tone} Hz'"
  video+=":fontsize=56:fontcolor=white:box=1:boxcolor=black@0.65:boxborderw=12:x=w-tw-48:y=h-130"
  args=(
    -f lavfi -i "$video"
    -f lavfi -i "sine=frequency=${tone}:sample_rate=48000"
    -t 10.24 -map 0:v -map 1:a
    -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p
    -g 32 -keyint_min 32 -sc_threshold 0 -bf 2
    -b:v 3M -minrate 3M -maxrate 3M -bufsize 1500k -x264-params nal-hrd=cbr:force-cfr=1
    -c:a aac -b:a 128k -ac 2
    -metadata service_name="acefleet CH ${i}" -metadata service_provider=acefleet
    -pes_payload_size 0 -f mpegts
  )
  recipe="$ffmpeg_version ${args[*]}"
  clip=$outdir/$name.ts
  if [[ -f $clip && -f $outdir/.$name.recipe && $(<"$outdir/.$name.recipe") == "$recipe" ]]; then
    continue
  fi
  step "encoding $clip (CH $i, ${tone} Hz)"
  tmp=$outdir/.$name.ts.tmp.$$
  trap 'rm -f "$tmp"' EXIT
  ffmpeg -hide_banner -nostdin -loglevel error -y "${args[@]}" "$tmp"
  mv -f "$tmp" "$clip"
  printf '%s' "$recipe" >"$outdir/.$name.recipe"
  made=$((made + 1))
done

# Channels beyond CHANNELS from an earlier run would silently change the infohash -> clip mapping.
for old in "$outdir"/ch[0-9][0-9].ts; do
  [[ -e $old ]] || continue
  n=$((10#$(basename "$old" .ts | cut -c3-)))
  if ((n > channels)); then rm -f "$old" "$outdir/.$(basename "$old" .ts).recipe"; fi
done
step "clips in $outdir: $channels channels ($made encoded now)"
