"""The HTTP API (FastAPI): Segment-spec ingest, tracking reactions, provider webhooks, on-site
messages, administration and operations endpoints.

``orchestrator.api.app.create_app(runtime)`` builds the application; the daemon serves it
with uvicorn. Each module holds one concern and its SQL, so the hot paths (ingest, site
messages) can be read and measured on their own.
"""
