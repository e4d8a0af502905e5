"""The benchmarking harness (scenarios, load generator, reports) — arrives with issue 4.

Kept as a package now so the layout of SPEC §3 holds; ``server`` never imports it.
"""
