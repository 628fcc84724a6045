"""Adapters that let other frameworks keep their own storage interfaces over a castate store.

Each adapter lives in its own module and imports its framework lazily, so ``import castate``
never needs the framework installed.
"""
