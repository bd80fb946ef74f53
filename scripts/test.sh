#!/usr/bin/env bash
# The whole test suite, as CI runs it: set up what is missing, then lint, type-check, test.
#   scripts/test.sh                 everything
#   scripts/test.sh -k proxy        extra arguments go to pytest (lint and molecule still run)
#   ACEFLEET_SKIP_MOLECULE=1 ...    skip the Molecule scenarios (quick local loops only)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

step "ruff"
ruff check .
ruff format --check acefleet proxy orchestrator enginesim acefleetctl
step "mypy (strict)"
mypy
if [[ -x scripts/lint-ansible.sh ]]; then step "ansible lint"; scripts/lint-ansible.sh; fi

step "pytest"
# Every tool the suite drives must be here: a missing one is a failure, never a skip.
need docker docker.io; need haproxy haproxy; need ffmpeg ffmpeg; need ffprobe ffmpeg
need promtool prometheus
need chromium chromium
need cvlc vlc-bin; need npm npm
[[ -f /usr/share/sgml/xmltv/dtd/0.5/xmltv.dtd ]] ||
  die "the XMLTV DTD is missing: run scripts/bootstrap.sh (or apt-get install -y libxmltv-perl)"
# A serial run left the two cores ~60 % idle (the tests wait on services, players, containers):
# one worker per core, each file (and each area of tests/conftest.py's ONE_WORKER_AREAS) whole
# on one worker. Three workers on two cores saturated them and timing-bound checks (decoded
# seconds of video in a window, client timeouts) failed. `-n 0` in the arguments runs serially.
workers=${ACEFLEET_TEST_WORKERS:-$(nproc)}
# the slowest tests, printed at the end: where CI time goes
pytest -ra -p no:cacheprovider --durations=30 -n "$workers" --dist loadfile "$@"

if [[ -x scripts/molecule.sh && -z ${ACEFLEET_SKIP_MOLECULE:-} ]]; then
  step "molecule"
  scripts/molecule.sh
fi
