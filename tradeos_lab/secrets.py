"""Values that must never be shown: URLs with passwords, broker keys, the embedded stack password.

`SecretUrl` keeps a connection URL usable while its `repr`/`str` hide the password; every secret is
also registered, in every form it can take in text (raw, percent-encoded, JSON- and repr-escaped),
so the log formatters and `status` can scrub it from any string field that still carries it.
"""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlencode, urlsplit

from pydantic_core import core_schema

_SECRET_QUERY_KEYS = {"password", "passwd", "secret", "token", "api_key", "apikey", "key"}
#: Shorter values are not registered: scrubbing them would mangle ordinary words and numbers.
MIN_SECRET_LENGTH = 4


class _Registry:
    """Every registered form, longest first; `forms` is replaced whole (never edited in place),
    so `scrub` reads it without the lock."""

    def __init__(self) -> None:
        self.forms: tuple[str, ...] = ()
        self.lock = threading.Lock()


_registry = _Registry()


def secret_forms(value: str) -> set[str]:
    """The spellings a secret takes in text: raw, percent-encoded (as in a URL, a query string or
    a path), JSON-escaped (ASCII-only or not) and Python-repr-escaped."""
    forms = {
        value,
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        ascii(value)[1:-1],
    }
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


def register_secret(value: str | None) -> None:
    """Remember a secret, in every form it can take, so `scrub` removes it from text."""
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    forms = secret_forms(value)
    with _registry.lock:
        known = set(_registry.forms)
        if not forms <= known:
            # Longest first, so a form is replaced whole before any shorter form inside it.
            _registry.forms = tuple(sorted(known | forms, key=len, reverse=True))


def scrub(text: str) -> str:
    """Replace every registered secret in `text` with `***`."""
    for secret in _registry.forms:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def scrub_fields(value: Any) -> Any:
    """`value` with every string inside it scrubbed (dict keys and values, list and tuple items);
    any other object that is not a JSON scalar becomes its scrubbed `str()`.

    Scrubbing each field before encoding is what catches a secret whose encoded form differs
    from the raw one (a `"`, a backslash or a non-ASCII character is escaped by `json.dumps`).
    """
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {scrub(str(k)): scrub_fields(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub_fields(v) for v in value]
    return scrub(str(value))


def url_without_password(url: str) -> str:
    """The URL with the password (and secret-looking query values) left out, for files other
    processes read: they take the password from their own settings or the data directory."""
    return _rewrite_secrets(url, None)


def redact_url(url: str) -> str:
    """The URL with its password and secret-looking query values replaced by `***`."""
    return _rewrite_secrets(url, "***")


def _rewrite_secrets(url: str, mask: str | None) -> str:
    """`url` with its password and secret query values replaced by `mask` (dropped when None);
    everything else is kept as written (`sqlite:////abs/path` keeps its four slashes)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        if mask is not None:
            netloc = f"{user}{':' + mask if sep else ''}@{host}"
        else:
            netloc = f"{user}@{host}" if user else host
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(k.lower() in _SECRET_QUERY_KEYS for k, _ in pairs):
        kept = [
            (k, mask if k.lower() in _SECRET_QUERY_KEYS else v)
            for k, v in pairs
            if mask is not None or k.lower() not in _SECRET_QUERY_KEYS
        ]
        query = urlencode(kept, safe="*/")
    return (
        f"{parts.scheme}://{netloc}{parts.path}"
        + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


def _url_secrets(url: str) -> list[str]:
    """The password and secret query values of `url`, as written and percent-decoded."""
    parts = urlsplit(url)
    found = [parts.password, unquote(parts.password)] if parts.password else []
    found += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_QUERY_KEYS]
    return [s for s in found if s]


def _parse_problem(url: str) -> str | None:
    """Why `url` does not parse as one connection URL, in words that quote none of it; None when
    it parses. A password with an unescaped `/`, `?` or `#` (common in base64) ends the host part
    early, leaving an `@` behind it."""
    parts = urlsplit(url)
    if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
        return (
            "the URL does not parse: a character in its user or password part ends the host "
            "early; percent-encode the password (/ is %2F, ? is %3F, # is %23, @ is %40)"
        )
    try:
        parts.port  # noqa: B018 - reading it is the check: urllib raises on a bad port
    except ValueError:
        return "the URL's port is not a number from 0 to 65535"
    return None


def _register_unparsed(url: str) -> None:
    rest = url.partition("://")[2]
    userinfo = rest.rpartition("@")[0]
    for piece in (rest, userinfo, userinfo.partition(":")[2], unquote(userinfo.partition(":")[2])):
        register_secret(piece)


class SecretUrl:
    """A connection URL whose password never shows in `repr`, `str` or serialised settings."""

    __slots__ = ("_url",)

    def __init__(self, url: str) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise ValueError("expected a URL such as redis://host:6379/0")
        problem = _parse_problem(url)
        if problem is not None:
            # A URL that does not parse may carry a password anywhere in it: it is registered
            # whole and in pieces, and the error never quotes it.
            _register_unparsed(url)
            raise ValueError(problem)
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
