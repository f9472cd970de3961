"""The fault suite: faults injected for real against real servers on 127.0.0.1.

`python -m tests.faults.report` runs it and writes docs/reliability.md from the results.
"""
