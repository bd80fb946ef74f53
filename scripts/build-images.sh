#!/usr/bin/env bash
# Build acefleet's images without any container registry (docs/images.md):
#   acefleet/base:bookworm    mmdebstrap minbase of bookworm from the host's apt mirror, imported
#                             into docker; cached as .cache/images/base-bookworm-HASH.tar.gz
#   build/wheelhouse/         acefleet + dependencies as wheels, built on the host (the Ansible
#                             acefleet role installs hosts offline from it)
#   build/clips/              real-video clips (scripts/make-clips.sh, when it exists)
#   acefleet/engine-sim       the engine simulator image FROM the base, installed from the wheelhouse
#   build/images/engine-sim.tar   `docker save` of it, for the engine_image role's offline path
#   acefleet/gluetun-standin  a stand-in for Gluetun's control server (tests, lab) FROM the base,
#                             built straight from images/gluetun-standin/ (docs/vpn.md)
#   build/images/gluetun-standin.tar   `docker save` of it, for edges without a registry
# Every product carries the hash of its inputs (image label acefleet.input-hash, or a stamp file)
# and is rebuilt only when they change, so a second run with nothing changed takes seconds.
#   scripts/build-images.sh            build what is missing or stale
#   scripts/build-images.sh --rebuild  ignore every cache (cold build; used to measure)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

rebuild=0
case ${1:-} in
  "") ;;
  --rebuild) rebuild=1 ;;
  *) die "usage: scripts/build-images.sh [--rebuild]" ;;
esac

BASE_IMAGE=acefleet/base:bookworm
ENGINE_IMAGE=acefleet/engine-sim:latest
STANDIN_IMAGE=acefleet/gluetun-standin:latest
STANDIN_DIR=images/gluetun-standin
# The base is bootstrapped from the host's own Debian mirror (the one machines here can reach);
# a host without one (Ubuntu) uses Debian's redirector, checked with debian-archive-keyring.
SOURCES=${ACEFLEET_DEBIAN_SOURCES:-/etc/apt/sources.list.d/debian.sources}
CACHE_DIR=.cache/images
WHEELHOUSE=build/wheelhouse
CLIPS=build/clips
CONTEXT=build/context/engine-sim
ENGINE_TAR=build/images/engine-sim.tar
STANDIN_TAR=build/images/gluetun-standin.tar
# Debian bookworm's python3; wheels with C extensions must be built for this very version.
IMAGE_PYTHON=3.11

need docker docker.io
docker info >/dev/null 2>&1 || die "dockerd does not answer: run scripts/ensure-docker.sh"
mkdir -p "$CACHE_DIR" build/images build/logs
# One build at a time per checkout: test fixtures and bootstrap may start it concurrently, and
# two runs would swap the wheelhouse and the staged context under each other.
exec 9>build/.build-images.lock
if ! flock -n 9; then
  step "waiting for another scripts/build-images.sh in this checkout to finish"
  flock -w 1200 9 || die "another scripts/build-images.sh held build/.build-images.lock for 20 min"
fi

label_of() {  # label_of IMAGE: the image's input hash, empty when the image is missing
  docker image inspect -f '{{ index .Config.Labels "acefleet.input-hash" }}' "$1" 2>/dev/null || true
}

# --- acefleet/base:bookworm --------------------------------------------------------------------
# Without the merged-usr hook perl comes in; the dpkg excludes drop docs, man pages and locales
# (as Debian's -slim images do): 75 MB instead of 116 MB. /var/lib/apt/lists stays empty and dated
# 1970, so Ansible's `apt: cache_valid_time` sees a stale cache and updates before installing.
# shellcheck disable=SC2016  # "$1" in the hooks is mmdebstrap's chroot path, expanded by mmdebstrap
MMDEBSTRAP_ARGS=(
  --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --customize-hook='upload images/base/docker-clean /etc/apt/apt.conf.d/docker-clean'
  # mmdebstrap's own apt cleanup runs after the customize hooks and would bump the directory's
  # mtime again (it recreates lists/lock), so these hooks do that cleanup themselves.
  --skip=cleanup/apt
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin'
  --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/archives/partial/*'
  --customize-hook='mkdir -p "$1"/var/lib/apt/lists/partial'
  --customize-hook='touch -d @0 "$1"/var/lib/apt/lists/partial "$1"/var/lib/apt/lists'
)

build_base() {
  if [[ ! -r $SOURCES ]]; then
    [[ -r /usr/share/keyrings/debian-archive-keyring.gpg ]] ||
      die "no Debian apt source and no Debian keyring: install it with 'apt-get install -y debian-archive-keyring'"
    step "no $SOURCES on this host: bootstrapping bookworm from deb.debian.org"
    SOURCES=build/debian.sources
    mkdir -p build
    printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm' \
      'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' >"$SOURCES"
  fi
  local hash cache have start old_id
  hash=$( {
    printf '%s\n' "${MMDEBSTRAP_ARGS[@]}"
    cat images/base/docker-clean "$SOURCES"
    dpkg --print-architecture
  } | sha256sum | cut -c1-16)
  cache=$CACHE_DIR/base-bookworm-$hash.tar.gz
  have=$(label_of "$BASE_IMAGE")
  if ((!rebuild)) && [[ $have == "$hash" ]]; then
    step "$BASE_IMAGE is up to date (input hash $hash)"
    # A fresh checkout on a machine that already has the image: cache it for the next dockerd.
    [[ -s $cache ]] || save_base "$cache"
    return
  fi
  start=$SECONDS
  if ((!rebuild)) && [[ -s $cache ]]; then
    step "loading $BASE_IMAGE from $cache"
    docker load -q -i "$cache" >/dev/null
    step "loaded $BASE_IMAGE in $((SECONDS - start)) s"
    return
  fi
  need mmdebstrap mmdebstrap
  old_id=$(image_id "$BASE_IMAGE")
  step "bootstrapping $BASE_IMAGE with mmdebstrap from $SOURCES (log: build/logs/mmdebstrap.log)"
  if ! mmdebstrap "${MMDEBSTRAP_ARGS[@]}" bookworm - "$SOURCES" 2>build/logs/mmdebstrap.log \
    | docker import --change "LABEL acefleet.input-hash=$hash" \
      --change 'LABEL acefleet.role=base' --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' \
      - "$BASE_IMAGE" >/dev/null; then
    tail -n 20 build/logs/mmdebstrap.log >&2
    die "mmdebstrap | docker import failed (full log: build/logs/mmdebstrap.log)"
  fi
  step "built $BASE_IMAGE in $((SECONDS - start)) s"
  drop_if_dangling "$old_id"
  save_base "$cache"
}

save_base() {  # save_base FILE: docker save | gzip, replacing the caches of older inputs
  step "caching $BASE_IMAGE as $1"
  rm -f "$CACHE_DIR"/base-bookworm-*.tar.gz
  docker save "$BASE_IMAGE" | gzip >"$1.tmp"
  mv -f "$1.tmp" "$1"
}

image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

drop_if_dangling() {  # drop_if_dangling ID: remove an image this script replaced, if now untagged
  [[ -n $1 ]] || return 0
  local tags
  tags=$(docker image inspect -f '{{len .RepoTags}}' "$1" 2>/dev/null || echo gone)
  # Still used by a container or as a parent: docker refuses, and that is fine.
  if [[ $tags == 0 ]]; then docker rmi "$1" >/dev/null 2>&1 || true; fi
}

# --- build/wheelhouse ---------------------------------------------------------------------------
host_python() {
  if [[ -x .venv/bin/python ]]; then echo .venv/bin/python; else echo python3; fi
}

pip_wheel() {  # pip_wheel DIR [ARGS]: pip wheel of this project into DIR, logged
  local dir=$1
  shift
  rm -rf "$dir"
  if ! "$(host_python)" -m pip wheel --disable-pip-version-check --wheel-dir "$dir" "$@" . \
    >build/logs/wheelhouse.log 2>&1; then
    tail -n 20 build/logs/wheelhouse.log >&2
    die "pip wheel failed (full log: build/logs/wheelhouse.log)"
  fi
}

build_wheelhouse() {
  local py version deps_hash src_hash stamp=build/.wheelhouse.input-hash have=(none none) start
  py=$(host_python)
  version=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [[ $version == "$IMAGE_PYTHON" ]] || die "the wheelhouse must be built with Python $IMAGE_PYTHON \
(bookworm's python3, as in the image and on Debian 12 hosts), but $py is $version"
  # Two hashes: the dependencies (pyproject.toml) change rarely, the code often; a code change
  # then rebuilds only the acefleet wheel instead of resolving every dependency again.
  deps_hash=$( { echo "$version"; cat pyproject.toml; } | sha256sum | cut -c1-16)
  # The project as hatchling packs it: metadata plus every file of the four packages.
  src_hash=$(find pyproject.toml README.md acefleet proxy orchestrator enginesim -type f \
    -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 | LC_ALL=C sort -z \
    | xargs -0 sha256sum | sha256sum | cut -c1-16)
  if ((!rebuild)) && [[ -f $stamp ]] && compgen -G "$WHEELHOUSE/acefleet-*.whl" >/dev/null; then
    read -r -a have <"$stamp"
  fi
  start=$SECONDS
  if [[ ${have[0]} == "$deps_hash" && ${have[1]} == "$src_hash" ]]; then
    step "$WHEELHOUSE is up to date (input hash $deps_hash $src_hash)"
    return
  elif [[ ${have[0]} == "$deps_hash" ]]; then
    step "rebuilding the acefleet wheel in $WHEELHOUSE (code changed, dependencies did not)"
    pip_wheel build/wheel.tmp --no-deps
    rm -f "$WHEELHOUSE"/acefleet-*.whl
    mv build/wheel.tmp/acefleet-*.whl "$WHEELHOUSE/"
    rm -rf build/wheel.tmp
  else
    step "building $WHEELHOUSE: pip wheel of acefleet and its dependencies on the host (log: build/logs/wheelhouse.log)"
    pip_wheel "$WHEELHOUSE.tmp"
    # Swap the whole directory: the Ansible role wants exactly one acefleet-*.whl in it.
    rm -rf "$WHEELHOUSE"
    mv "$WHEELHOUSE.tmp" "$WHEELHOUSE"
  fi
  echo "$deps_hash $src_hash" >"$stamp"
  step "built $WHEELHOUSE in $((SECONDS - start)) s: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
}

# --- build/clips ----------------------------------------------------------------------------------
build_clips() {
  if [[ -x scripts/make-clips.sh ]]; then
    # make-clips.sh is idempotent itself (a recipe stamp per clip): a second run encodes nothing.
    scripts/make-clips.sh "$CLIPS"
  else
    step "no scripts/make-clips.sh: the engine image gets no clips (synthetic TS only)"
    mkdir -p "$CLIPS"
  fi
}

link_into() {  # link_into FILE... DIR: hard-link (or copy across filesystems) into DIR
  cp -l "$@" 2>/dev/null || cp "$@"
}

# --- acefleet/engine-sim ------------------------------------------------------------------------
build_engine() {
  local base_id hash
  base_id=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")
  # Stage a small context (the docker client tars all of it on every build, cached or not).
  rm -rf "$CONTEXT"
  mkdir -p "$CONTEXT/wheelhouse/deps" "$CONTEXT/wheelhouse/acefleet" "$CONTEXT/clips"
  cp images/engine-sim/Dockerfile images/engine-sim/healthcheck.py "$CONTEXT/"
  # Hard links: the staged context costs no copy of the wheels and clips.
  local whl
  for whl in "$WHEELHOUSE"/*.whl; do
    case ${whl##*/} in
      acefleet-*) link_into "$whl" "$CONTEXT/wheelhouse/acefleet/" ;;
      *) link_into "$whl" "$CONTEXT/wheelhouse/deps/" ;;
    esac
  done
  if compgen -G "$CLIPS/*.ts" >/dev/null; then link_into "$CLIPS"/*.ts "$CONTEXT/clips/"; fi
  hash=$( {
    echo "$base_id"
    cd "$CONTEXT" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16)
  build_on_base "$ENGINE_IMAGE" "$CONTEXT" "$hash" engine-sim
}

# build_on_base IMAGE CONTEXT HASH ROLE: docker build IMAGE FROM the base image, labelled with its
# input HASH and ROLE; skipped when the image already carries HASH (the build's log is
# build/logs/ROLE.log).
build_on_base() {
  local image=$1 context=$2 hash=$3 role=$4 start old_id no_cache=()
  if ((!rebuild)) && [[ $(label_of "$image") == "$hash" ]]; then
    step "$image is up to date (input hash $hash)"
    return
  fi
  start=$SECONDS
  step "building $image from $BASE_IMAGE (input hash $hash; log: build/logs/$role.log)"
  ((rebuild)) && no_cache=(--no-cache)
  old_id=$(image_id "$image")
  if ! docker build "${no_cache[@]}" --build-arg "BASE=$BASE_IMAGE" \
    --label "acefleet.input-hash=$hash" --label "acefleet.role=$role" \
    -t "$image" "$context" >"build/logs/$role.log" 2>&1; then
    tail -n 30 "build/logs/$role.log" >&2
    die "docker build of $image failed (full log: build/logs/$role.log)"
  fi
  drop_if_dangling "$old_id"
  step "built $image in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=si)B)"
}

save_image() {  # save_image IMAGE TAR WHY: docker save, redone only when the image changed
  local image=$1 tar=$2 why=$3 id stamp=$2.image-id start
  id=$(docker image inspect -f '{{.Id}}' "$image")
  if ((!rebuild)) && [[ -s $tar && -f $stamp && $(<"$stamp") == "$id" ]]; then
    step "$tar is up to date"
    return
  fi
  start=$SECONDS
  step "saving $image to $tar ($why)"
  docker save -o "$tar.tmp" "$image"
  mv -f "$tar.tmp" "$tar"
  echo "$id" >"$stamp"
  step "saved $tar in $((SECONDS - start)) s ($(du -sh "$tar" | cut -f1))"
}

# --- acefleet/gluetun-standin -------------------------------------------------------------------
# Its context is its own small folder (a Dockerfile and one Python file): nothing to stage.
build_standin() {
  local base_id hash
  base_id=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")
  hash=$( {
    echo "$base_id"
    cd "$STANDIN_DIR" && find . -type f -not -name '*.pyc' -not -path '*/__pycache__/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16)
  build_on_base "$STANDIN_IMAGE" "$STANDIN_DIR" "$hash" gluetun-standin
}

total=$SECONDS
build_base
build_wheelhouse
build_clips
build_engine
save_image "$ENGINE_IMAGE" "$ENGINE_TAR" "for the engine_image role's offline path"
build_standin
save_image "$STANDIN_IMAGE" "$STANDIN_TAR" "for edges that run stand-in tunnels without a registry"
step "images ready in $((SECONDS - total)) s: $BASE_IMAGE, $ENGINE_IMAGE, $STANDIN_IMAGE, $WHEELHOUSE, $ENGINE_TAR, $STANDIN_TAR"
