"""The adain HTTP service (``adain serve``; docs/service.md).

Layout: ``cli`` (entry point) -> ``settings`` (flags and ADAIN_* variables) -> ``engine`` (workers, admission,
dispatch, readiness) -> ``worker`` (two lanes of queue, batching and thread over the model on one device), with
``admission`` (each worker's measured seconds per pixel); ``app`` assembles the FastAPI application from the
``routes_*`` routers, ``dependencies``, ``middleware``, ``errors`` and ``metrics`` (the instruments; ``collector``
reads the workers at scrape time); ``prepare`` and ``media`` turn bytes into work and results into bytes;
``store`` / ``store_sql`` keep uploaded styles (SQLite or PostgreSQL; ``store_types`` is their interface);
``ray_app`` runs the same application on Ray Serve (docs/scale.md).
"""
