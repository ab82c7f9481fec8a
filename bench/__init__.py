"""Benchmarks of pyrunc against the Go shim (containerd-shim-runc-v2): `python -m bench.run`."""
