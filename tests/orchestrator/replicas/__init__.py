"""Real worker processes sharing one PostgreSQL database (issue: replicas, crash safety)."""
