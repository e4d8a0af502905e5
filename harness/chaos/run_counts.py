"""What a chaos run counts beside the checker's failures, each a threshold's metric.

Apart from ``run.py`` so that ``harness/thresholds.py`` can name them without
importing the runner (and the stack and the load behind it).
"""

CHAOS_RUN_COUNTS = (
    "unknown_not_committed",  # points no answer spoke for, not committed (allowed)
    "faults",                 # faults injected
    "fault_kinds",            # kinds among them
    "missing_kinds",          # kinds the scenario names that were never injected
    "not_injected",           # scheduled faults whose injection failed
    "without_effect",         # injected, but nothing shows they did anything
    "not_undone",             # faults still in place when the run ended
    "nemesis_errors",         # the nemesis's own failures
    "load_errors",            # the load's own failures (a client task that raised)
    "dlq_dropped",            # dead letters the DLQ's bound threw away (the check is blind to them)
)
