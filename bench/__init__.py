"""Benchmarks: `python -m bench.run` (the full stack against faster-whisper), `python -m bench.der`."""
