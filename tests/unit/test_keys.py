"""API keys: names, hashed keys files, the caller a key identifies, and acting for a key."""

from __future__ import annotations

from pathlib import Path

import pytest

from frontend.keys import ADMIN, OPEN, KeyRing, key_hash, main, parse_key, read_keys_file
from frontend.settings import frontend_settings
from whisper_triton.settings import SettingsError


def test_named_and_bare_keys_get_names_and_ids_that_do_not_hold_the_key() -> None:
    alice, bare = parse_key("alice:sk-secret"), parse_key("sk-other")
    assert alice.name == "alice" and alice.digest == key_hash("sk-secret")
    assert bare.name == f"key-{key_hash('sk-other')[:8]}"
    assert "secret" not in alice.id and len(alice.id) == 16 and alice.id != bare.id


def test_the_ring_identifies_each_holder_and_the_admin() -> None:
    ring = KeyRing.from_settings(["alice:k-a", "bob:k-b"], admin_key="k-admin")
    assert ring.identify("k-a").name == "alice" and not ring.identify("k-a").admin
    assert ring.identify("k-b").key_id == parse_key("bob:k-b").id
    assert ring.identify("k-admin") == ADMIN and ring.identify("nope") is None
    assert ring.act_as("bob").name == "bob" and ring.act_as("carol") is None
    assert ring.name_of(parse_key("alice:k-a").id) == "alice" and ring.name_of("") == "open"


def test_ownership() -> None:
    ring = KeyRing.from_settings(["alice:k-a", "bob:k-b"])
    alice, bob = ring.identify("k-a"), ring.identify("k-b")
    assert alice.owns(alice.key_id) and not alice.owns(bob.key_id) and not alice.owns(None)
    assert ADMIN.owns(bob.key_id) and OPEN.owns(None) and OPEN.owns(alice.key_id)


def test_a_keys_file_holds_hashes_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["carol"]) == 0
    out = capsys.readouterr().out.splitlines()
    key, line = out[0].rsplit(" ", 1)[1], out[1].rsplit(" ", 1)[1]
    path = tmp_path / "keys"
    path.write_text(f"# team keys\n\n{line}  # carol's\n")
    ring = KeyRing.from_settings([], str(path))
    assert ring.identify(key).name == "carol" and key not in path.read_text()
    settings = frontend_settings({"FRONTEND_API_KEYS_FILE": str(path), "FRONTEND_HOST": "0.0.0.0"})
    assert settings.auth_enabled and settings.key_ring().identify(key).name == "carol"


@pytest.mark.parametrize("text", ["carol:" + "a" * 63, "carol " + "a" * 64, ":sha256:" + "a" * 64, "carol:md5:abc"])
def test_a_bad_keys_file_line_fails_at_start_naming_the_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# ok\n{text}\n")
    with pytest.raises(SettingsError, match="line 2"):
        read_keys_file(path)


@pytest.mark.parametrize("environ", [
    {"FRONTEND_API_KEYS": "alice:k1,alice:k2"},
    {"FRONTEND_API_KEYS": "alice:k1,bob:k1"},
    {"FRONTEND_API_KEYS": "alice:k1", "ADMIN_API_KEY": "k1"},
    {"FRONTEND_API_KEYS_FILE": "/nonexistent/keys"},
])
def test_conflicting_keys_fail_at_start(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        frontend_settings(environ)
