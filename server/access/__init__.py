"""Who may call, and how often: bearer tokens and roles, per-token rate limits."""
