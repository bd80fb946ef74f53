"""scripts/build-images.sh: registry-free products, caching by input hash, clear failures."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.images.conftest import BASE_IMAGE, ENGINE_IMAGE, REPO, BuildRun, docker, run_build

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_available")]


def test_second_run_skips_every_build(built_images: BuildRun) -> None:
    again = run_build()
    assert again.returncode == 0, again.output
    steps = again.steps()
    for product in (BASE_IMAGE, "build/wheelhouse", ENGINE_IMAGE, "build/images/engine-sim.tar"):
        assert any(product in s and "up to date" in s for s in steps), (product, steps)
    rebuilding = ("==> building", "==> bootstrapping", "==> loading", "==> saving")
    rebuilt = [s for s in steps if s.startswith(rebuilding)]
    assert rebuilt == [], rebuilt
    print(f"warm scripts/build-images.sh: {again.seconds:.1f} s")


def test_images_carry_their_input_hash(built_images: BuildRun) -> None:
    for image in (BASE_IMAGE, ENGINE_IMAGE):
        labels = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}", image))
        assert len(labels["acefleet.input-hash"]) == 16, (image, labels)


def test_base_leaves_apt_lists_empty_and_old(built_images: BuildRun) -> None:
    out = docker(
        "run", "--rm", "--label", "acefleet.test=images", BASE_IMAGE,
        "sh", "-c", "stat -c %Y /var/lib/apt/lists; ls -A /var/lib/apt/lists; ls /var/cache/apt",
    )  # fmt: skip
    lines = out.split()
    assert lines[0] == "0", out
    assert set(lines[1:]) <= {"partial", "lock", "archives"}, out


def test_base_cache_is_saved_outside_git(built_images: BuildRun) -> None:
    caches = list((REPO / ".cache" / "images").glob("base-bookworm-*.tar.gz"))
    assert len(caches) == 1, caches
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(caches[0])], cwd=REPO, check=False
    ).returncode
    assert ignored == 0


def test_wheelhouse_installs_acefleet_offline(built_images: BuildRun, tmp_path: Path) -> None:
    wheelhouse = REPO / "build" / "wheelhouse"
    assert len(list(wheelhouse.glob("acefleet-*.whl"))) == 1
    # Only the wheelhouse: no index and none of this machine's pip configuration.
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1"}
    env.pop("PIP_FIND_LINKS", None)
    proc = subprocess.run(
        [
            "python3", "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
            "--report", str(tmp_path / "report.json"), "--find-links", str(wheelhouse),
            "acefleet",
        ],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    names = {item["metadata"]["name"].lower() for item in report["install"]}
    assert {"acefleet", "fastapi", "uvloop", "pydantic-settings"} <= names


def test_saved_engine_tar_holds_the_engine_image(built_images: BuildRun) -> None:
    with tarfile.open(REPO / "build" / "images" / "engine-sim.tar") as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.load(member)
    assert manifest[0]["RepoTags"] == [ENGINE_IMAGE]
    image_id = docker("image", "inspect", "-f", "{{.Id}}", ENGINE_IMAGE).strip()
    assert manifest[0]["Config"].startswith(image_id.removeprefix("sha256:"))


def path_without(tmp_path: Path, *missing: str) -> str:
    """A PATH holding every command of this machine's PATH except ``missing``."""
    farm = tmp_path / "bin"
    farm.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not Path(directory).is_dir():
            continue
        for tool in Path(directory).iterdir():
            target = farm / tool.name
            if tool.name not in missing and not target.exists():
                target.symlink_to(tool)
    return str(farm)


@pytest.mark.parametrize(
    ("tool", "package", "args"),
    [("docker", "docker.io", ()), ("mmdebstrap", "mmdebstrap", ("--rebuild",))],
)
def test_missing_tool_gives_one_clear_line(
    tmp_path: Path, tool: str, package: str, args: tuple[str, ...]
) -> None:
    # mmdebstrap is needed only for a cold base build, hence --rebuild; the script stops at the
    # check, before it changes anything.
    run = run_build(*args, env={**os.environ, "PATH": path_without(tmp_path, tool)}, timeout=60)
    assert run.returncode != 0
    errors = [line for line in run.output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {tool} is missing: install it with 'apt-get install -y {package}' "
        "(or run scripts/bootstrap.sh)"
    ], run.output
