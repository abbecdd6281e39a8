"""What every source shares: plain text out of feed HTML, the content hash, a bounded payload."""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from datetime import datetime
from html.parser import HTMLParser
from typing import Final

from tradeos_lab.contracts import NewsArticle
from tradeos_lab.contracts.types import ARTICLE_TEXT_MAX_LENGTH

#: Limits of the contract's text fields (title: ShortText, url: LongText).
TITLE_MAX: Final = 256
URL_MAX: Final = 4000
UNTITLED: Final = "(untitled)"

# Control characters and surrogates cannot travel in a message (tab and newline can).
_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


class _TextOnly(HTMLParser):
    """The text of an HTML fragment, without script and style contents."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skipping += 1
        elif tag in ("br", "p", "div", "li"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def plain_text(fragment: str | None) -> str:
    """The readable text of a feed field (HTML or not): tags and unsafe characters removed,
    entities decoded, whitespace collapsed."""
    if not fragment:
        return ""
    parser = _TextOnly()
    try:
        parser.feed(fragment)
        parser.close()
        text = "".join(parser.parts)
    except (AssertionError, ValueError):  # html.parser on badly broken markup
        text = html.unescape(re.sub(r"<[^>]*>", " ", fragment))
    text = _UNSAFE.sub("", unicodedata.normalize("NFC", text))
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def article_id(title: str, body: str) -> str:
    """SHA-256 (hex) of the normalised title and body: the same story fetched twice, from one
    source or two, or with other whitespace and case, has one id."""
    normal = " ".join(f"{title}\n{body}".casefold().split())
    return hashlib.sha256(normal.encode("utf-8", "surrogatepass")).hexdigest()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def build_article(
    *,
    source: str,
    title: str | None,
    body: str | None,
    fetched_at: datetime,
    published_at: datetime | None = None,
    url: str | None = None,
    external_id: str | None = None,
) -> NewsArticle:
    """A `NewsArticle` from a source's raw fields: HTML removed, each field cut to the
    contract's limit, the id hashed over the full text (so two items differing only past the
    cut stay apart)."""
    clean_title = plain_text(title).replace("\n", " ") or UNTITLED
    clean_body = plain_text(body)
    link = plain_text(url) or None
    guid = plain_text(external_id).replace("\n", " ") or None
    return NewsArticle(
        article_id=article_id(clean_title, clean_body),
        source=source,
        external_id=None if guid is None else _cut(guid, TITLE_MAX),
        url=None if link is None or len(link) > URL_MAX else link,
        title=_cut(clean_title, TITLE_MAX),
        body=_cut(clean_body, ARTICLE_TEXT_MAX_LENGTH),
        published_at=published_at,
        fetched_at=fetched_at,
    )
