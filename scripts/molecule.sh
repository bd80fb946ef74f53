#!/usr/bin/env bash
# Molecule scenarios (what CI runs after the tests):
#   molecule/default          site.yml on the 7-host lab topology + fleet checks (verify_fleet.py)
#   roles/keepalived/molecule haproxy + keepalived alone: VIP, failover, reload
#   scripts/molecule.sh [SCENARIO...]   default: all of them; names: fleet, lb
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG=$PWD/ansible.cfg
scripts/install-collections.sh
scripts/build-lab-images.sh

run_scenario() {  # run_scenario NAME DIR: molecule test in DIR, timed
  local start=$SECONDS
  step "molecule test: $1 ($2)"
  (cd "$2" && molecule test)
  step "molecule $1 passed in $((SECONDS - start)) s"
}

scenarios=("$@")
((${#scenarios[@]})) || scenarios=(lb fleet)
for s in "${scenarios[@]}"; do
  case $s in
    fleet) run_scenario fleet . ;;
    lb) run_scenario lb roles/keepalived ;;
    *) die "unknown scenario $s (fleet, lb)" ;;
  esac
done
