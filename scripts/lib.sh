# Helpers sourced by the scripts in this folder.
step() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
need() {  # need COMMAND PACKAGE: one clear line when a tool is missing
  command -v "$1" >/dev/null 2>&1 || die "$1 is missing: install it with 'apt-get install -y $2' (or run scripts/bootstrap.sh)"
}
