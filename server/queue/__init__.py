"""The Redis lease queue between ingest and PostgreSQL, and the workers that drain it."""
