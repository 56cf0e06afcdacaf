"""The algorithm's job, shared by both layouts: settings -> plan -> per case: read, per pair: register, write.

process.py (the container's entrypoint) only parses the command line and calls `run` or `demo`.
Reading order for a newcomer: settings.py, layouts.py, cases.py (process_case / process_pair), run.py.
"""
from runner.run import run

__all__ = ["run"]
