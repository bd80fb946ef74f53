#!/usr/bin/env bash
# Vendor the browser code central's dashboard loads (hls.js, for the "watch" preview) from the npm
# registry at build time: `npm ci` of web/package-lock.json (exact version, integrity hashes) in
# build/web, then the one built file and its license into orchestrator/central/static/vendor/
# (gitignored; pyproject.toml lists it as a wheel artifact, so the wheelhouse carries it to control
# hosts). The page never loads anything from a CDN.
#   scripts/vendor-web.sh   (scripts/bootstrap.sh runs it before scripts/build-images.sh)
# Idempotent: a stamp holds the digest of the inputs; a second run with nothing changed only
# hashes two small files.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

BUILD=build/web
OUT=orchestrator/central/static/vendor
STAMP=$BUILD/.vendor.input-hash
# hls.js's light build: no subtitles, alternate audio, DRM or CMCD, all of which a preview of an
# MPEG-TS live channel does without (about 2/3 the size of hls.min.js).
DIST=node_modules/hls.js/dist/hls.light.min.js
FILES=(hls.light.min.js hls.js.LICENSE)

mkdir -p "$BUILD"
# One run at a time per checkout (bootstrap and a developer may start it together).
exec 9>"$BUILD/.lock"
flock -w 300 9 || die "another scripts/vendor-web.sh held $BUILD/.lock for 5 min"

hash=$( {
  cat web/package.json web/package-lock.json
  echo "$DIST ${FILES[*]}"
} | sha256sum | cut -c1-16)
fresh=1
for f in "${FILES[@]}"; do [[ -s $OUT/$f ]] || fresh=0; done
if ((fresh)) && [[ -f $STAMP && $(<"$STAMP") == "$hash" ]]; then
  step "$OUT is up to date (input hash $hash)"
  exit 0
fi

have npm || die "npm is missing: install it with 'apt-get install -y nodejs npm' (or run scripts/bootstrap.sh)"
start=$SECONDS
step "vendoring hls.js: npm ci of web/package-lock.json in $BUILD (log: build/logs/vendor-web.log)"
mkdir -p build/logs
cp web/package.json web/package-lock.json "$BUILD/"
# --ignore-scripts: no package code runs at install; the lock's integrity hashes are checked.
if ! (cd "$BUILD" && npm ci --ignore-scripts --no-audit --no-fund) >build/logs/vendor-web.log 2>&1; then
  tail -n 20 build/logs/vendor-web.log >&2
  die "npm ci failed (full log: build/logs/vendor-web.log; the npm registry must be reachable)"
fi
[[ -s $BUILD/$DIST ]] || die "$BUILD/$DIST is missing after npm ci: does the pinned hls.js still ship it?"
version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$BUILD/node_modules/hls.js/package.json" | head -n 1)
# Written under temporary names and renamed: a running central never reads half a file.
mkdir -p "$OUT"
cp "$BUILD/$DIST" "$OUT/.hls.light.min.js.tmp"
cp "$BUILD/node_modules/hls.js/LICENSE" "$OUT/.hls.js.LICENSE.tmp"
mv -f "$OUT/.hls.light.min.js.tmp" "$OUT/hls.light.min.js"
mv -f "$OUT/.hls.js.LICENSE.tmp" "$OUT/hls.js.LICENSE"
echo "$hash" >"$STAMP"
step "vendored hls.js $version into $OUT in $((SECONDS - start)) s ($(du -h "$OUT/hls.light.min.js" | cut -f1))"
