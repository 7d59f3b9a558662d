"""The tables, as SQLAlchemy Core. Core rather than the ORM because the engine reads and
writes rows in batches (executemany) on its hot path; an identity map would only cost.

Everything a customer is doing lives here: the process holds nothing a crash could lose.
Timers are the ``wake_at`` column of live enrollments (a partial index keeps the due scan
independent of how many timers are pending); sends are rows in the ``deliveries`` outbox
with a unique idempotency key.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from orchestrator.db.types import UTCDateTime

metadata = MetaData()


customers = Table(
    "customers",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("email", String(320)),
    Column("phone", String(64)),
    Column("timezone", String(64)),
    Column("traits", JSON, nullable=False, default=dict),
    # channel -> {"granted": bool, "source": str, "at": iso time}
    Column("consent", JSON, nullable=False, default=dict),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("erased_at", UTCDateTime()),
)

anonymous_ids = Table(
    "anonymous_ids",
    metadata,
    Column("anonymous_id", String(255), primary_key=True),
    Column("customer_id", String(255), nullable=False, index=True),
    Column("linked_at", UTCDateTime(), nullable=False),
)

journeys = Table(
    "journeys",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("current_version", String(32), nullable=False),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("updated_at", UTCDateTime(), nullable=False),
)

journey_versions = Table(
    "journey_versions",
    metadata,
    Column("version", String(32), primary_key=True),
    Column("journey", String(64), nullable=False, index=True),
    Column("definition", JSON, nullable=False),
    Column("source", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

enrollments = Table(
    "enrollments",
    metadata,
    # Deterministic: derived from the journey, customer, key and the entering event, so a
    # re-run of a crashed batch produces the same id (and the same delivery keys).
    Column("id", String(40), primary_key=True),
    Column("journey", String(64), nullable=False),
    Column("version", String(32), nullable=False),
    Column("customer_id", String(255), nullable=False),
    Column("key", String(255), nullable=False, server_default=""),
    Column("state", String(64), nullable=False),
    Column("status", String(8), nullable=False),  # live | ended
    Column("wake_at", UTCDateTime()),
    Column("wake_trigger", String(80)),
    Column("visits", JSON, nullable=False, default=dict),  # step -> times entered
    Column("context", JSON, nullable=False, default=dict),  # entering event's properties
    Column("last_delivery", String(120)),
    Column("arm", String(64)),
    Column("entered_at", UTCDateTime(), nullable=False),
    Column("step_entered_at", UTCDateTime(), nullable=False),
    Column("ended_at", UTCDateTime()),
    Column("exit_reason", String(64)),
    Index(
        "uq_enrollments_live_key",
        "journey",
        "customer_id",
        "key",
        unique=True,
        sqlite_where=text("status = 'live'"),
        postgresql_where=text("status = 'live'"),
    ),
    Index(
        "ix_enrollments_due",
        "wake_at",
        sqlite_where=text("status = 'live' AND wake_at IS NOT NULL"),
        postgresql_where=text("status = 'live' AND wake_at IS NOT NULL"),
    ),
    Index("ix_enrollments_customer", "customer_id", "journey"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(255), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # track | identify | page | internal
    Column("name", String(255)),
    Column("customer_id", String(255), nullable=False),
    Column("anonymous_id", String(255)),
    Column("properties", JSON, nullable=False, default=dict),
    Column("traits", JSON, nullable=False, default=dict),
    Column("context", JSON, nullable=False, default=dict),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("processed_at", UTCDateTime()),
    Column("error", Text),
    Index(
        "ix_events_pending",
        "id",
        sqlite_where=text("processed_at IS NULL"),
        postgresql_where=text("processed_at IS NULL"),
    ),
    Index("ix_events_customer_name", "customer_id", "name", "occurred_at"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(160), nullable=False, unique=True),
    Column("operation", String(16), nullable=False),  # send | audience_add | audience_remove
    Column("enrollment_id", String(40)),
    Column("journey", String(64)),
    Column("step", String(64)),
    Column("channel", String(64), nullable=False),
    Column("customer_id", String(255), nullable=False),
    Column("template", String(128)),
    Column("payload", JSON, nullable=False, default=dict),
    Column("transactional", Boolean, nullable=False, server_default=text("false")),
    Column("status", String(12), nullable=False),  # pending | sending | sent | dead | skipped
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("lease_until", UTCDateTime()),
    Column("last_error", Text),
    Column("provider_message_id", String(255)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime()),
    Index(
        "ix_deliveries_due",
        "next_attempt_at",
        sqlite_where=text("status IN ('pending', 'sending')"),
        postgresql_where=text("status IN ('pending', 'sending')"),
    ),
    Index("ix_deliveries_customer", "customer_id"),
    Index(
        "ix_deliveries_provider_id",
        "provider_message_id",
        sqlite_where=text("provider_message_id IS NOT NULL"),
        postgresql_where=text("provider_message_id IS NOT NULL"),
    ),
)

history = Table(
    "history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # Indexed by customer only (the timeline); every index here is paid on each transition.
    Column("enrollment_id", String(40), nullable=False),
    Column("journey", String(64), nullable=False),
    Column("customer_id", String(255), nullable=False, index=True),
    Column("from_state", String(64)),
    Column("to_state", String(64), nullable=False),
    Column("trigger", String(96), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
)

site_messages = Table(
    "site_messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_key", String(160), nullable=False, unique=True),
    Column("customer_id", String(255), nullable=False),
    Column("channel", String(64), nullable=False),
    Column("slot", String(64), nullable=False),
    Column("html", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime()),
    Column("dismissed_at", UTCDateTime()),
    Index("ix_site_messages_customer", "customer_id", "expires_at"),
)

audience_memberships = Table(
    "audience_memberships",
    metadata,
    Column("enrollment_id", String(40), primary_key=True),
    Column("channel", String(64), primary_key=True),
    Column("customer_id", String(255), nullable=False),
    Column("added_at", UTCDateTime(), nullable=False),
    Column("removed_at", UTCDateTime()),
    Index("ix_audience_customer", "customer_id", "channel"),
)

provider_events = Table(
    "provider_events",
    metadata,
    Column("provider", String(32), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("received_at", UTCDateTime(), nullable=False),
)

# The named segments a customer is in, so a change of membership can be announced as a
# ``segment.entered`` / ``segment.exited`` event (orchestrator.segments).
segment_memberships = Table(
    "segment_memberships",
    metadata,
    Column("customer_id", String(255), primary_key=True),
    Column("segment", String(64), primary_key=True),
    Column("entered_at", UTCDateTime(), nullable=False),
)

# A segment whose memberships a full sweep has recorded, for this condition: from then on
# sweeps announce changes (see orchestrator/segments.py).
segment_baselines = Table(
    "segment_baselines",
    metadata,
    Column("segment", String(64), primary_key=True),
    Column("condition", Text, nullable=False),
    Column("recorded_at", UTCDateTime(), nullable=False),
)
