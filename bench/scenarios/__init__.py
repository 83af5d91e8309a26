"""One benchmark each, run as `python -m bench.scenarios.NAME`; docs/performance.md shows what each measures."""
