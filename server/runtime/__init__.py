"""The process: command line, start-up and shutdown in order, forking, production probes."""
