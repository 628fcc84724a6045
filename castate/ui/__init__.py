"""``castate ui``: a local web page over a store (optional extra ``castate[ui]``).

``explorer`` gathers what the pages show from the library, ``app`` serves it (Starlette),
``server`` binds the address and runs it (uvicorn). castate's core never imports this
package; the CLI imports it only for ``castate ui``.
"""
