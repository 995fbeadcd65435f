"""An asyncio reference server of chatcore's protocol subset, the baseline of the benchmarks.

Run it with ``python -m benchmarks.reference --port 0 --port-file F [--uvloop]``.
"""
