"""Accepting points: where validated points go, bulk line parsing, waiting for commits."""
