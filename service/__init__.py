"""The adain HTTP service (``adain serve``; docs/service.md, docs/architecture.md).

At the root, what composes the service: ``cli`` (``adain serve``), ``settings`` (the one table of options),
``app`` (the FastAPI application factory), ``admin`` (the operations port) and ``ray_app`` (the same application
on Ray Serve). Beneath it, one concern per subpackage: ``api`` (HTTP: ``routes/``, dependencies, forms, errors,
access and keys, middleware, limits, media), ``runtime`` (the engine's request contract, its local and Ray backends,
the workers and their jobs, admission, memory) and ``store`` (where uploaded styles and their statistics live).
"""
