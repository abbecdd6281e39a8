"""News and sentiment: the articles the sentiment scorer took and their scores per ticker.

- news_articles: one row per content hash (the article id), with the `news.raw` message that
  brought it, its text, and its overall score.
- news_scores: one row per (article, ticker it names): the score at the article's time, indexed
  by (symbol, ts) for backtests on recorded news.

Idempotent like the others: a table that exists is left alone.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tradeos_lab.stores.records.sqltypes import UTCDateTime

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCORE_RANGE = "score >= -1 AND score <= 1"
MESSAGE_ID = 36
NEW_TABLES = ("news_scores", "news_articles")  # in the order they are dropped


def _has_table(name: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(name)


def upgrade() -> None:
    if not _has_table("news_articles"):
        op.create_table(
            "news_articles",
            sa.Column("article_id", sa.String(64), nullable=False),
            sa.Column("message_id", sa.String(MESSAGE_ID), nullable=False),
            sa.Column("source", sa.String(64), nullable=False),
            sa.Column("external_id", sa.String(256), nullable=True),
            sa.Column("url", sa.Text(), nullable=True),
            sa.Column("title", sa.String(256), nullable=False),
            sa.Column("body", sa.Text(), nullable=False),
            sa.Column("published_at", UTCDateTime(), nullable=True),
            sa.Column("fetched_at", UTCDateTime(), nullable=False),
            sa.Column("scorer", sa.String(64), nullable=False),
            sa.Column("score", sa.Double(), nullable=False),
            sa.Column("recorded_at", UTCDateTime(), nullable=False),
            sa.PrimaryKeyConstraint("article_id", name="pk_news_articles"),
            sa.CheckConstraint(SCORE_RANGE, name="ck_news_articles_score"),
        )
        op.create_index("ix_news_articles_fetched_at", "news_articles", ["fetched_at"])
    if not _has_table("news_scores"):
        op.create_table(
            "news_scores",
            sa.Column("article_id", sa.String(64), nullable=False),
            sa.Column("symbol", sa.String(20), nullable=False),
            sa.Column("ts", UTCDateTime(), nullable=False),
            sa.Column("score", sa.Double(), nullable=False),
            sa.Column("scorer", sa.String(64), nullable=False),
            sa.PrimaryKeyConstraint("article_id", "symbol", name="pk_news_scores"),
            sa.ForeignKeyConstraint(
                ["article_id"],
                ["news_articles.article_id"],
                name="fk_news_scores_article_id_news_articles",
            ),
            sa.CheckConstraint(SCORE_RANGE, name="ck_news_scores_score"),
        )
        op.create_index("ix_news_scores_symbol_ts", "news_scores", ["symbol", "ts"])


def downgrade() -> None:
    for name in NEW_TABLES:
        if _has_table(name):
            op.drop_table(name)
