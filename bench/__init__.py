"""Benchmarks: served throughput and latency of the gateway against llama-cpp-python."""
