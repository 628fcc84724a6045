"""The layers of docs/architecture.md, from the code: no module imports one of a higher layer,
and no modules import each other in a circle (imports under TYPE_CHECKING and inside
functions count too: they are the same dependency, only later)."""

from __future__ import annotations

import ast
from pathlib import Path

import castate

ROOT = Path(castate.__file__).parent

# Lowest first; a module may import its own layer and those below. The most specific prefix wins.
LAYERS: dict[str, int] = {
    "castate.errors": 0,
    "castate.codec": 1,
    "castate.keys": 1,  # the secrets users give (passphrase, raw key); the slots that use them are the repository's
    "castate.backends": 2,
    "castate.repository": 3,
    "castate.testing": 3,
    # the sessions package: the dict interface and the policies, the manager, the blocking API
    "castate.sessions.storage": 4,
    "castate.sessions.auto": 4,
    "castate.sessions.lifecycle": 4,
    "castate.sessions.manager": 5,
    "castate.sessions.sync": 6,
    "castate.sessions": 6,  # its facade (castate/sessions/__init__.py) and any module added there
    "castate": 7,  # the package's facade (castate/__init__.py)
    # the sessions layer's old module paths, re-exports kept for users' imports: nothing in castate uses them
    "castate.state": 7,
    "castate.storage": 7,
    "castate.autocheckpoint": 7,
    "castate.lifecycle": 7,
    "castate.sync": 7,
    "castate.tracking": 7,  # old path of castate.codec.tracking
    "castate.compat": 7,
    "castate.integrations": 7,
    "castate.display": 7,
    "castate.migrate": 8,  # old path of castate.compat.marsys_import
    "castate.ui": 8,
    "castate.cli": 9,
    "castate.demo": 9,
}


def layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        found = LAYERS.get(".".join(parts[:n]))
        if found is not None:
            return found
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to docs/architecture.md)")


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports() -> dict[str, set[str]]:
    """Module -> the castate modules it imports (``from castate import lifecycle`` names the submodule)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == "castate")
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
                if base.split(".")[0] != "castate":
                    continue
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
                found.update(subs or [base])
        graph[name] = {m for m in found if m != name}
    return graph


def test_no_import_runs_up_a_layer() -> None:
    upward = [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in sorted(imports().items())
        for b in sorted(targets)
        if layer(b) > layer(a)
    ]
    assert upward == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    graph = imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                circles.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert circles == []


def test_the_layer_test_sees_what_it_checks() -> None:
    graph = imports()
    assert "castate.sessions.lifecycle" in graph["castate.sessions.manager"]  # `from castate.sessions import lifecycle`
    assert "castate.sessions.manager" in graph["castate.state"]  # the old path re-exports the new one
    assert "castate.ui.address" in graph["castate.ui.server"]
    assert "castate.ui.server" in graph["castate.cli.ui"]  # an import inside a function counts
    assert layer("castate.sessions.manager") < layer("castate.cli")
    assert layer("castate.sessions.sync") < layer("castate.ui")
    assert layer("castate.repository.packs.store") == layer("castate.repository") < layer("castate.sessions.storage")


def test_the_old_module_paths_still_import() -> None:
    """Users and MARSYS adapters import from the paths the sessions layer had before its
    package, change tracking before it joined the codec, and the MARSYS import before compat."""
    import castate.autocheckpoint
    import castate.codec.tracking
    import castate.compat.marsys_import
    import castate.lifecycle
    import castate.migrate
    import castate.sessions
    import castate.state
    import castate.storage
    import castate.sync
    import castate.tracking

    assert castate.state.StateManager is castate.sessions.StateManager is castate.StateManager
    assert castate.state.CheckpointInfo is castate.sessions.manager.CheckpointInfo
    assert castate.storage.FileStorageBackend is castate.sessions.FileStorageBackend is castate.FileStorageBackend
    assert castate.storage.StorageBackend is castate.sessions.storage.StorageBackend
    assert castate.autocheckpoint.AutoCheckpoint is castate.sessions.auto.AutoCheckpoint is castate.AutoCheckpoint
    assert castate.autocheckpoint.AutoCheckpointer is castate.sessions.auto.AutoCheckpointer
    assert castate.lifecycle.checkpointed is castate.sessions.lifecycle.checkpointed
    assert castate.lifecycle.pause is castate.sessions.lifecycle.pause
    assert castate.sync.SyncStateManager is castate.sessions.SyncStateManager is castate.SyncStateManager
    assert castate.migrate.import_marsys_directory is castate.compat.marsys_import.import_marsys_directory
    assert castate.migrate.ImportReport is castate.compat.marsys_import.ImportReport
    assert castate.tracking.tracked is castate.codec.tracking.tracked is castate.tracked
    assert castate.tracking.TrackedDict is castate.codec.tracking.TrackedDict is castate.TrackedDict
    assert castate.tracking.TrackedList is castate.codec.tracking.TrackedList is castate.TrackedList
    for module in (
        castate.state,
        castate.storage,
        castate.autocheckpoint,
        castate.lifecycle,
        castate.sync,
        castate.tracking,
        castate.migrate,
    ):
        assert all(getattr(module, name) is not None for name in module.__all__)


def test_the_sessions_layer_stands_on_the_repository_alone() -> None:
    """The sessions package imports nothing from the codec or the backends: the types it names
    (a backend, ``Default``, ``Durability``, ``RefRepairReport``) come re-exported by
    ``castate.repository``, and ref moves are the repository's operations (``move_ref``,
    ``point_ref``, ``delete_refs_at``), so no session module builds a ``RefUpdate``."""
    below = [
        f"{a} imports {b}"
        for a, targets in sorted(imports().items())
        if a == "castate.sessions" or a.startswith("castate.sessions.")
        for b in sorted(targets)
        if b.split(".")[:2] in (["castate", "backends"], ["castate", "codec"])
    ]
    assert below == []
    assert "castate.repository" in imports()["castate.sessions.storage"]  # the test sees its imports


def test_the_ui_moves_refs_through_the_repository() -> None:
    """The UI's fork undo moves a ref with ``Repository.move_ref``, not a backend's ``RefUpdate``."""
    assert not [b for b in imports()["castate.ui.explorer"] if b.startswith("castate.backends")]
