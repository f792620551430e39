"""The runtime: what runs (the `schedule` daemon, `collect` runs, nightly reports, status).

Also its log lines, the demo and the simulated vendor.

May import every other part of `etl` and `reports` (to build reports); never click.
"""
