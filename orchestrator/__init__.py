"""The parcours runtime: storage, engine, workers, dispatcher, HTTP API, CLI and daemon.

The only package that knows about storage, time and scheduling; it wires the pure journey
language (``journeys``) to the channel adapters (``channels``).
"""
