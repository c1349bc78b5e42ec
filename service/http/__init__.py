"""heed over HTTP: the app (`app.py`), one module of routes per protocol over the front door,
and the parts they share (errors, accounting, guard, SSE, the server). docs/architecture.md
walks a request through them."""
