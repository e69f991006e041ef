"""The performance benchmark: each scenario against its floor, measured in the same run.

Run it with `python -m tests.bench.run` (or `--quick`, as CI does). Not part of the test run.
"""
