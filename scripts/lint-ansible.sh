#!/usr/bin/env bash
# Lint the rollout: yamllint (.yamllint) and ansible-lint with the production profile
# (.ansible-lint, no blanket skips) over site.yml, playbooks, roles, inventories and Molecule.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG=$PWD/ansible.cfg
scripts/install-collections.sh

targets=(site.yml playbooks roles inventories requirements.yml)
[[ -d molecule ]] && targets+=(molecule)
step "yamllint"
yamllint -s "${targets[@]}" .yamllint .ansible-lint
step "ansible-lint (production profile)"
# Offline: never let ansible-lint try to install requirements from Galaxy.
ansible-lint --offline -q "${targets[@]}"
