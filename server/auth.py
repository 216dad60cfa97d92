"""Optional Bearer API keys (settings.server.api_keys; empty = auth off). Probes are never behind auth.

Keys are compared in constant time; logs and rate-limit buckets use a short hash of the key, never the key.
"""

from __future__ import annotations

import hashlib
import hmac

from server.errors import Unauthorized
from xemo.settings import ServerSettings


class ApiKeys:
    def __init__(self, server: ServerSettings) -> None:
        self._keys = [k.get_secret_value().encode() for k in server.api_keys if k.get_secret_value()]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(self, authorization: str | None) -> str | None:
        """The key's id (short hash) when auth is on, None when it is off; Unauthorized otherwise."""
        if not self._keys:
            return None
        if not authorization:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("malformed Authorization header: expected 'Bearer <key>'")
        return self.check_key(token.strip())

    def check_key(self, token: str) -> str:
        candidate = token.encode()
        ok = False
        for key in self._keys:  # no early exit: timing does not reveal which key matched
            ok |= hmac.compare_digest(candidate, key)
        if not ok:
            raise Unauthorized("invalid API key")
        return key_id(token)


def key_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]
