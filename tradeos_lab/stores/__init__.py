"""Durable stores: the records database, the OHLCV lake and the Postgres bar store."""
