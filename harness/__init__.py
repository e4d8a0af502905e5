"""The benchmarking harness: replays scenario files against the server and reports.

``run.py bench`` loads a scenario (``scenario``, ``executors``, ``thresholds``),
starts the server once per ingest path (``server``), drives it from generator
processes (``loadgen``, ``workload``, ``httpclient``, ``metrics``) while sampling
its queue (``sampler``), and writes raw figures, charts and a report
(``runner``, ``report``, ``charts``).  It may import ``server``; ``server``
never imports it.
"""
