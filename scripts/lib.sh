# Helpers sourced by the scripts in this folder.
step() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
have() {  # have COMMAND: on PATH, or in sbin (Debian puts daemons there; a user's PATH may not)
  command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]]
}
need() {  # need COMMAND PACKAGE: one clear line when a tool is missing
  have "$1" || die "$1 is missing: install it with 'apt-get install -y $2' (or run scripts/bootstrap.sh)"
}
