"""``run.py bench chaos``: a seeded nemesis, a retrying mixed load, an exactly-once checker.

The load (``load.py``) records every logical point it sent and what the answers
said of it (``ledger.py``); after the run the checker (``checker.py``) compares
that record with the rows, standings and dead letters the server left behind.
"""
