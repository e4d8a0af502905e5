"""Operating it: metrics exporter, readiness, logs, error reports, the loop monitor.

Nothing here may import prometheus_client at package import (``metrics_dir`` is
read before it is first imported).
"""
