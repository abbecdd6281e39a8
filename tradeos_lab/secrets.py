"""Values that must never be shown: URLs with passwords, broker keys, the embedded stack password.

`SecretUrl` keeps a connection URL usable while its `repr`/`str` hide the password; every secret is
also registered so the log formatter can scrub it from any line that still carries it.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic_core import core_schema

_SECRET_QUERY_KEYS = {"password", "passwd", "secret", "token", "api_key", "apikey", "key"}
_registry: set[str] = set()
_registry_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret so `scrub` removes it from log lines."""
    if value and len(value) >= 4:
        with _registry_lock:
            _registry.add(value)


def scrub(text: str) -> str:
    """Replace every registered secret in `text` with `***`."""
    for secret in _registry:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def redact_url(url: str) -> str:
    """The URL with its password and secret-looking query values replaced by `***`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}{':***' if sep else ''}@{host}"
    query = parts.query
    if query:
        pairs = [
            (k, "***" if k.lower() in _SECRET_QUERY_KEYS else v)
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe="*/")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _url_secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_QUERY_KEYS]
    return [s for s in found if s]


class SecretUrl:
    """A connection URL whose password never shows in `repr`, `str` or serialised settings."""

    __slots__ = ("_url",)

    def __init__(self, url: str) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise ValueError("expected a URL such as redis://host:6379/0")
        self._url = url
        for secret in _url_secrets(url):
            register_secret(secret)

    def get_secret_value(self) -> str:
        """The full URL, password included: pass it to a client, never print it."""
        return self._url

    @property
    def scheme(self) -> str:
        return urlsplit(self._url).scheme

    @property
    def redacted(self) -> str:
        return redact_url(self._url)

    def __repr__(self) -> str:
        return f"SecretUrl({self.redacted!r})"

    def __str__(self) -> str:
        return self.redacted

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretUrl) and other._url == self._url

    def __hash__(self) -> int:
        return hash(self._url)

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: Any) -> core_schema.CoreSchema:
        def validate(value: object) -> SecretUrl:
            if isinstance(value, SecretUrl):
                return value
            if not isinstance(value, str):
                raise ValueError("expected a URL string")
            return cls(value)

        return core_schema.no_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda v: v.redacted),
        )
