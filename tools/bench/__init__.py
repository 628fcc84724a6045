"""Benchmarks of castate against its peers on one seeded agent-session workload (see README.md)."""
