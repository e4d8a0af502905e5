"""``BlackHoleProxy`` for the tests: one copy, in the harness (``harness/proxy.py``),
which the chaos scenario's nemesis uses too."""

from harness.proxy import BlackHoleProxy, ThreadedProxy

__all__ = ["BlackHoleProxy", "ThreadedProxy"]
