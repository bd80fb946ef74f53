"""The fleet's stream-token keys are one inventory value (acefleet_token_keys, with
acefleet_tokens_required) that the central and proxy roles both read, and both roles' preflights
refuse what the services would refuse (token mode without keys, a malformed key, a secret under
16 characters, a key id twice) and, outside the lab, placeholder secrets — with a message saying
what to fix, before anything is installed. The keys never show in the play's output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import ansible

ROOT = Path(__file__).resolve().parents[2]
LAB_VAULT = ROOT / "inventories" / "lab" / "group_vars" / "all" / "vault.yml"
GOOD = "k1:a-real-secret-of-32-characters!"


def _run(tmp_path: Path, environment: str, **values: object) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(
        """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: "{{ item }}"
        tasks_from: preflight
      loop: [central, proxy]
"""
    )
    extra_vars = tmp_path / "extra.json"
    extra_vars.write_text(json.dumps({"acefleet_environment": environment, **values}))
    return ansible.playbook(
        playbook, "localhost,", "-e", f"@{LAB_VAULT}", "-e", f"@{extra_vars}", check=False
    )


@pytest.mark.slow
def test_open_mode_without_keys_and_token_mode_with_keys_pass(tmp_path: Path) -> None:
    done = _run(tmp_path, "lab")
    assert done.returncode == 0, done.stdout + done.stderr
    second = "k2:another-secret-16+chars"
    done = _run(tmp_path, "lab", acefleet_token_keys=[GOOD, second], acefleet_tokens_required=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "a-real-secret" not in done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("values", "role"),
    [
        ({"acefleet_tokens_required": True}, "central"),
        ({"acefleet_token_keys": ["k1:short-secret"]}, "central"),
        ({"acefleet_token_keys": ["no-colon-at-all-just-a-secret"]}, "central"),
        ({"acefleet_token_keys": [GOOD, "k1:a-second-secret-for-k1"]}, "central"),
        ({"acefleet_token_keys": ["bad id:a-real-secret-of-32-chars"]}, "central"),
        # a role's own knob overrides the shared value: the proxy's check stands on its own
        ({"proxy_tokens_required": True}, "proxy"),
        ({"proxy_token_keys": ["k1:tooshort"]}, "proxy"),
    ],
)
def test_preflight_refuses_what_the_services_refuse(
    tmp_path: Path, values: dict[str, object], role: str
) -> None:
    done = _run(tmp_path, "lab", **values)
    assert done.returncode != 0, done.stdout
    assert f"{role}: every token key" in done.stdout, done.stdout
    assert "at least 16" in done.stdout
    for value in values.values():
        for entry in value if isinstance(value, list) else []:
            assert entry.split(":", 1)[-1] not in done.stdout  # no secret in the output


@pytest.mark.slow
def test_placeholder_token_secrets_are_refused_outside_the_lab(tmp_path: Path) -> None:
    """The example inventory's vault placeholder, with real API keys: refused in production,
    accepted in the lab."""
    example = (ROOT / "inventories" / "example" / "group_vars" / "all" / "vault.yml").read_text()
    placeholder = next(
        line.split(":", 1)[1].strip().strip("'\"")
        for line in example.splitlines()
        if line.startswith("vault_acefleet_token_key:")
    )
    real = {
        "vault_acefleet_service_api_key": "s" * 24,
        "vault_acefleet_operator_api_key": "o" * 24,
        "vault_acefleet_agent_api_key": "g" * 24,
        "acefleet_token_keys": [placeholder],
    }
    done = _run(tmp_path, "production", **real)
    assert done.returncode != 0
    assert "no placeholder secrets" in done.stdout, done.stdout
    real["acefleet_token_keys"] = [GOOD]
    done = _run(tmp_path, "production", **real)
    assert done.returncode == 0, done.stdout + done.stderr
