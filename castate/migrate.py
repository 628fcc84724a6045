"""Old path of ``castate.compat.marsys_import`` (importing a MARSYS ``FileStorageBackend``
directory), kept so existing imports and ``python -m castate.migrate marsys SRC DEST`` work."""

import sys

from castate.compat.marsys_import import MARSYS_DIRS, ImportReport, cli_import_marsys, import_marsys_directory
from castate.compat.marsys_import import main as _main


def main(argv: list[str] | None = None) -> int:
    return _main(argv, prog="python -m castate.migrate")


__all__ = ["MARSYS_DIRS", "ImportReport", "cli_import_marsys", "import_marsys_directory", "main"]

if __name__ == "__main__":
    sys.exit(main())
