#!/usr/bin/env bash
# Ansible collections without Galaxy (unreachable here): take community.docker, community.general,
# community.crypto (the pki role) and ansible.posix out of the PyPI `ansible` wheel into the
# project-local collections/ dir that ansible.cfg points at. The wheel is cached in .cache/, the
# extraction is skipped when the collections of that wheel version are already there, so a second
# run takes well under a second.
# Operators with Galaxy can use `ansible-galaxy collection install -r requirements.yml` instead.
# It also links this checkout into that path as the collection acefleet.fleet (galaxy.yml at the
# root), so the playbooks' acefleet.fleet.<role> names resolve from the checkout as they do from an
# installed collection.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ANSIBLE_SPEC=${ACEFLEET_ANSIBLE_WHEEL_SPEC:-ansible>=12,<13}
COLLECTIONS=(community/docker community/general community/crypto ansible/posix)
dest=collections/ansible_collections
stamp=$dest/.acefleet-extracted
cache=.cache/ansible-wheel
PY=.venv/bin/python
[[ -x $PY ]] || PY=python3

wheel=$(ls "$cache"/ansible-*.whl 2>/dev/null | sort -V | tail -n1 || true)
if [[ -z $wheel ]]; then
  step "downloading the ansible wheel from PyPI once (collections only; cached in $cache)"
  mkdir -p "$cache"
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$cache" "$ANSIBLE_SPEC"
  wheel=$(ls "$cache"/ansible-*.whl | sort -V | tail -n1)
fi

link_self() {  # collections/ansible_collections/acefleet/fleet -> the checkout (relative link)
  mkdir -p "$dest/acefleet"
  [[ -L $dest/acefleet/fleet ]] || ln -sfn ../../.. "$dest/acefleet/fleet"
}

want="$(basename "$wheel") ${COLLECTIONS[*]}"
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  link_self
  exit 0
fi

step "extracting ${COLLECTIONS[*]} from $(basename "$wheel") into $dest"
rm -rf "$dest"
mkdir -p "$dest"
"$PY" - "$wheel" "$dest" "${COLLECTIONS[@]}" <<'PYEOF'
import sys
import zipfile
from pathlib import Path

wheel, dest, *wanted = sys.argv[1:]
prefixes = tuple(f"ansible_collections/{c}/" for c in wanted)
count = 0
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        if info.filename.startswith(prefixes) and not info.is_dir():
            rel = Path(info.filename).relative_to("ansible_collections")
            target = Path(dest) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
            count += 1
if count == 0:
    sys.exit(f"no collections {wanted} found in {wheel}")
print(f"    {count} files")
PYEOF
printf '%s\n' "$want" >"$stamp"
link_self
