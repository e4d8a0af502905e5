"""Typed reading of one TOML table, collecting every problem instead of stopping at the first.

Scenario files are refused with all their problems at once, each named by key,
like the server's configuration; this is the one place that knows how a value
is checked (type, bounds, choices) and which keys were never read.
"""

from __future__ import annotations

from typing import Any


class TableReader:
    """Typed access to one TOML table, collecting problems under a key prefix."""

    def __init__(self, table: Any, prefix: str, problems: list[str]) -> None:
        self.prefix = prefix
        self.problems = problems
        if not isinstance(table, dict):
            problems.append(f"{prefix.rstrip('.') or 'file'}: must be a table")
            table = {}
        self.table = table
        self.used: set[str] = set()

    def get(self, key: str, kind: type[Any] | tuple[type[Any], ...], default: Any = None, *,
            required: bool = False, low: float | None = None, high: float | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
        """The value of ``key``, or ``default`` (after noting the problem) when it is bad."""
        self.used.add(key)
        name = f"{self.prefix}{key}"
        if key not in self.table:
            if required:
                self.problems.append(f"{name}: is required")
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            self.problems.append(f"{name}: must be {kinds[0].__name__}, not a boolean")
            return default
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            self.problems.append(f"{name}: must be {' or '.join(k.__name__ for k in kinds)}")
            return default
        if low is not None and value < low:
            self.problems.append(f"{name}: must be >= {low:g} (got {value})")
            return default
        if high is not None and value > high:
            self.problems.append(f"{name}: must be <= {high:g} (got {value})")
            return default
        if choices is not None and value not in choices:
            self.problems.append(f"{name}: must be one of {', '.join(choices)} (got {value!r})")
            return default
        return value

    def finish(self, renamed: dict[str, str] | None = None) -> None:
        """Name every key that was never read: a typo must not pass silently.

        ``renamed`` maps old key names to new ones, so the error says what to write.
        """
        for key in sorted(set(self.table) - self.used):
            hint = f" (now {renamed[key]!r})" if renamed and key in renamed else ""
            self.problems.append(f"{self.prefix}{key}: unknown key{hint}")
