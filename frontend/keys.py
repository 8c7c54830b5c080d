"""API keys and who holds them: each key has a name and an id, and the request's `Principal` says whose it is.

Keys come from `FRONTEND_API_KEYS` (`<key>` or `<name>:<key>`, comma-separated or JSON) and from
`FRONTEND_API_KEYS_FILE`, a file of `<name>:sha256:<hex>` lines that holds hashes only
(`python -m frontend.keys <name>` prints such a line for a new random key). A key is never stored or
logged: records keep its id, the first 16 hex digits of its SHA-256, and logs and metrics show its name.

The admin key (`ADMIN_API_KEY`) sees and manages every key's work and acts for a key with the
`x-act-as-key: <name>` header. With no key configured (loopback only) the caller is `OPEN`, who sees
everything, as one user would.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from whisper_triton.settings import SettingsError

__all__ = ["ADMIN", "OPEN", "ApiKey", "KeyRing", "Principal", "key_hash", "key_id"]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_FILE_LINE = re.compile(rf"(?P<name>{NAME.pattern}):sha256:(?P<hash>[0-9a-fA-F]{{64}})")
ACT_AS_HEADER = "x-act-as-key"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(digest: str) -> str:
    """The id records keep for the key of this SHA-256 (hex): short, and no way back to the key."""
    return digest[:16]


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: str  # SHA-256 of the key, hex

    @property
    def id(self) -> str:
        return key_id(self.digest)


@dataclass(frozen=True)
class Principal:
    """Who makes a request: `key_id` owns what it creates; `admin` sees and manages everything."""

    key_id: str
    name: str
    admin: bool = False

    @property
    def sees_all(self) -> bool:
        return self.admin

    def owns(self, owner: str | None) -> bool:
        """Whether a record created by `owner` (a key id) is this caller's to see."""
        return self.admin or (owner or "") == self.key_id


OPEN = Principal(key_id="", name="open", admin=True)  # no keys configured: one user, who sees everything
ADMIN = Principal(key_id="admin", name="admin", admin=True)


class KeyRing:
    """The configured keys, checked in constant time against every one of them."""

    def __init__(self, keys: Iterable[ApiKey], admin_key: str = "") -> None:
        self.keys = list(keys)
        self._admin_digest = key_hash(admin_key) if admin_key else ""
        names = [k.name for k in self.keys]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SettingsError(f"API key names must be unique: {', '.join(duplicates)} is given twice.")
        ids = [k.id for k in self.keys]
        if len(set(ids)) != len(ids) or (self._admin_digest and key_id(self._admin_digest) in ids):
            raise SettingsError("The same API key is configured twice (FRONTEND_API_KEYS, its file, ADMIN_API_KEY).")
        self.by_name = {k.name: k for k in self.keys}

    @classmethod
    def from_settings(cls, api_keys: Iterable[str], keys_file: str = "", admin_key: str = "") -> KeyRing:
        keys = [parse_key(entry) for entry in api_keys]
        if keys_file:
            keys += read_keys_file(Path(keys_file).expanduser())
        return cls(keys, admin_key)

    @property
    def enabled(self) -> bool:
        return bool(self.keys or self._admin_digest)

    def admin_matches(self, presented: str) -> bool:
        return bool(self._admin_digest) and hmac.compare_digest(key_hash(presented), self._admin_digest)

    def identify(self, presented: str) -> Principal | None:
        """The holder of a presented key, or None. Every key is compared, whichever matches."""
        digest = key_hash(presented)
        found: ApiKey | None = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        if self.admin_matches(presented):
            return ADMIN
        return Principal(key_id=found.id, name=found.name) if found else None

    def act_as(self, name: str) -> Principal | None:
        """The key named `name`, for the admin acting for it."""
        key = self.by_name.get(name.strip())
        return Principal(key_id=key.id, name=key.name) if key else None

    def name_of(self, owner: str | None) -> str:
        """A key id's name, for logs and task metadata (unknown ids keep their id)."""
        if not owner:
            return "open"
        if owner == ADMIN.key_id:
            return ADMIN.name
        return next((k.name for k in self.keys if k.id == owner), owner)


def parse_key(entry: str) -> ApiKey:
    """`<name>:<key>` or a bare `<key>` (named `key-<first 8 hex digits of its id>`)."""
    entry = entry.strip()
    name, sep, key = entry.partition(":")
    if sep and NAME.fullmatch(name) and key:
        return ApiKey(name=name, digest=key_hash(key))
    if not entry:
        raise SettingsError("Invalid value for FRONTEND_API_KEYS: an empty key.")
    digest = key_hash(entry)
    return ApiKey(name=f"key-{digest[:8]}", digest=digest)


def read_keys_file(path: Path) -> list[ApiKey]:
    """`<name>:sha256:<hex>` per line; blank lines and `#` comments are skipped."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"Invalid value for FRONTEND_API_KEYS_FILE: cannot read {path}: {exc.strerror}.") from exc
    keys = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _FILE_LINE.fullmatch(line)
        if not match:
            raise SettingsError(f"Invalid line {number} in FRONTEND_API_KEYS_FILE {path}: "
                                "expected <name>:sha256:<64 hex digits> (python -m frontend.keys <name> makes one).")
        keys.append(ApiKey(name=match["name"], digest=match["hash"].lower()))
    return keys


def main(argv: list[str]) -> int:
    """`python -m frontend.keys <name>`: a new random key, and the line for the keys file."""
    if len(argv) != 1 or not NAME.fullmatch(argv[0]):
        print("usage: python -m frontend.keys <name>   (letters, digits, _ . @ -; at most 64)", file=sys.stderr)
        return 2
    key = "sk-" + secrets.token_urlsafe(32)
    print(f"key (give it to {argv[0]}; it is not stored anywhere): {key}")
    print(f"line for FRONTEND_API_KEYS_FILE: {argv[0]}:sha256:{key_hash(key)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
