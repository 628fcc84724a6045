"""Developer tools for castate (not part of the installed package)."""
