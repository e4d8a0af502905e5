"""The chaos scenario: a seeded nemesis, a retrying load and an exactly-once checker."""
