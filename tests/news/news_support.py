"""The local server standing in for news sources, and their documents in the documented
formats."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Route:
    """What the server answers on one path."""

    body: bytes
    content_type: str = "application/rss+xml; charset=utf-8"
    status: int = 200
    delay_s: float = 0.0


@dataclass
class NewsServer:
    """Serves `routes` (path -> Route) on loopback and remembers the requests it got."""

    url: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def add(self, path: str, body: bytes | str, **options: Any) -> str:
        data = body.encode() if isinstance(body, str) else body
        self.routes[path] = Route(data, **options)
        return self.url + path


def rss(*items: dict[str, str], title: str = "Example Markets") -> str:
    """An RSS 2.0 document (https://www.rssboard.org/rss-specification)."""
    body = "".join(
        "<item>" + "".join(f"<{k}>{v}</{k}>" for k, v in item.items()) + "</item>" for item in items
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
        f"<title>{title}</title><link>https://news.example.com/</link>"
        f"<description>Markets</description>{body}</channel></rss>"
    )


def atom(*entries: dict[str, str], title: str = "Example Atom") -> str:
    """An Atom 1.0 document (RFC 4287)."""
    body = ""
    for entry in entries:
        parts = [f"<id>{entry['id']}</id>", f"<title>{entry['title']}</title>"]
        parts.append(f"<updated>{entry.get('updated', '2024-03-15T14:30:00Z')}</updated>")
        if "link" in entry:
            parts.append(f'<link href="{entry["link"]}"/>')
        if "summary" in entry:
            parts.append(f'<summary type="html">{entry["summary"]}</summary>')
        if "content" in entry:
            parts.append(f'<content type="html">{entry["content"]}</content>')
        body += "<entry>" + "".join(parts) + "</entry>"
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>{title}</title><id>urn:example:feed</id><updated>2024-03-15T14:30:00Z</updated>"
        f"{body}</feed>"
    )


def reddit_token() -> str:
    """Reddit's OAuth2 answer to a client-credentials grant (POST /api/v1/access_token)."""
    return json.dumps(
        {"access_token": "test-token", "token_type": "bearer", "expires_in": 86400, "scope": "*"}
    )


def reddit_listing(*posts: dict[str, Any]) -> str:
    """A Reddit listing of links (`kind: Listing`, children of `kind: t3`)."""
    children = []
    for i, post in enumerate(posts):
        data = {
            "id": post.get("id", f"p{i}"),
            "name": f"t3_{post.get('id', f'p{i}')}",
            "title": post["title"],
            "selftext": post.get("selftext", ""),
            "permalink": f"/r/stocks/comments/{post.get('id', f'p{i}')}/x/",
            "url": post.get("url", "https://www.reddit.com/r/stocks/"),
            "created_utc": post.get("created_utc", time.time()),
            "subreddit": "stocks",
            "author": "someone",
            "is_self": True,
        }
        children.append({"kind": "t3", "data": data})
    return json.dumps(
        {"kind": "Listing", "data": {"after": None, "before": None, "children": children}}
    )
