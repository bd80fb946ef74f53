#!/usr/bin/env bash
# Lint the rollout: yamllint (.yamllint) and ansible-lint with the production profile
# (.ansible-lint, no blanket skips) over site.yml, playbooks, roles, inventories, Molecule and the
# collection's metadata; the role READMEs must match their argument specs (scripts/role-docs.py),
# and the collection acefleet.fleet must build (tests/ansible/test_collection.py installs and
# syntax-checks it).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG=$PWD/ansible.cfg
scripts/install-collections.sh

targets=(site.yml playbooks roles inventories requirements.yml galaxy.yml meta changelogs)
[[ -d molecule ]] && targets+=(molecule)
step "yamllint"
yamllint -s "${targets[@]}" .yamllint .ansible-lint
step "ansible-lint (production profile)"
# Offline: never let ansible-lint try to install requirements from Galaxy.
ansible-lint --offline -q "${targets[@]}"
step "role READMEs generated from meta/argument_specs.yml (scripts/role-docs.py --check)"
.venv/bin/python scripts/role-docs.py --check
step "ansible-galaxy collection build (acefleet.fleet)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
ansible-galaxy collection build --output-path "$out" >/dev/null
for tarball in "$out"/*.tar.gz; do
  echo "    $(basename "$tarball"): $(stat -c %s "$tarball") bytes, $(tar tzf "$tarball" | wc -l) entries"
done
