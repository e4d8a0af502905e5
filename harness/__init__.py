"""The benchmarking harness: replays scenario files against the server and reports.

``run.py bench`` loads a scenario (``scenario``, ``executors``, ``thresholds``),
measures the bare stack's POST/s as the run's baseline (``baseline``), starts
the server once per ingest path (``server``), drives it from generator
processes (``loadgen``, ``workload``, ``httpclient``, ``metrics``) while sampling
its queue and loop lag (``sampler``, printing ``progress``) and the CPU of
server, PostgreSQL and Redis (``cost``), and writes raw figures, charts and a
report (``runner``, ``report``, ``costtable``, ``charts``, every number through
``numfmt``) to ``bench-results/``; ``run.py report A B`` compares two runs when
``comparability`` allows.  It may import ``server``; ``server`` never imports it.
"""
