"""``castate ui``: a local web page over a store (optional extra ``castate[ui]``).

``explorer`` gathers what the pages show from the library, ``app`` serves it (Starlette),
``server`` binds the address and runs it (uvicorn); ``address`` (no optional packages) says
which addresses it may bind. castate's core never imports this package; the CLI imports
``address`` for its checks and the rest only for ``castate ui``.
"""
