"""Adapters that let other frameworks keep their state in castate (each needs its own extra)."""
