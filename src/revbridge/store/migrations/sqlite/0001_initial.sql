-- revbridge schema, version 1 (SQLite).
--
-- Conventions shared with the other backends' migration histories:
--   * instants are INTEGER microseconds since the Unix epoch, UTC;
--   * amounts are TEXT decimal strings, never REAL;
--   * JSON documents are TEXT;
--   * ids that other rows or events refer to are never reused (AUTOINCREMENT here).

CREATE TABLE raw_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL CHECK (size >= 0),
    received_at INTEGER NOT NULL
);
CREATE INDEX raw_messages_sha256 ON raw_messages (sha256);
CREATE INDEX raw_messages_received_at ON raw_messages (received_at);

-- The bytes of a raw message, in consecutive parts (a part is at most a few tens of MiB,
-- which keeps every value far below the database's maximum value length).
CREATE TABLE raw_parts (
    id INTEGER PRIMARY KEY,
    raw_id INTEGER NOT NULL REFERENCES raw_messages (id) ON DELETE CASCADE,
    part_no INTEGER NOT NULL,
    byte_offset INTEGER NOT NULL CHECK (byte_offset >= 0),
    size INTEGER NOT NULL CHECK (size > 0),
    content BLOB NOT NULL,
    UNIQUE (raw_id, part_no)
);

CREATE TABLE units (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    raw_id INTEGER NOT NULL REFERENCES raw_messages (id),
    kind TEXT NOT NULL,
    natural_key TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    byte_start INTEGER NOT NULL CHECK (byte_start >= 0),
    byte_end INTEGER NOT NULL CHECK (byte_end >= byte_start),
    first_segment INTEGER NOT NULL,
    envelope TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX units_natural_key ON units (natural_key, content_hash);
-- One live unit per (natural key, bytes); later copies may only be recorded as duplicates.
CREATE UNIQUE INDEX units_live_key ON units (natural_key, content_hash)
    WHERE status <> 'duplicate';
CREATE INDEX units_raw ON units (raw_id);

CREATE TABLE events (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    occurred_at INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    entity TEXT,
    facility TEXT,
    keys TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    causation_id TEXT,
    source TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX events_correlation ON events (correlation_id);

-- Every value of every event's ``keys``, for by_key. Filled only by append, with the event.
CREATE TABLE event_keys (
    value TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (value, position)
) WITHOUT ROWID;

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_after INTEGER NOT NULL,
    lease_owner TEXT,
    lease_expires_at INTEGER,
    fence INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX jobs_status_run_after ON jobs (status, run_after);
CREATE INDEX jobs_key ON jobs (key);

CREATE TABLE journals (
    key TEXT PRIMARY KEY,
    entity TEXT NOT NULL,
    date TEXT NOT NULL,
    description TEXT NOT NULL,
    kind TEXT NOT NULL,
    currency TEXT NOT NULL,
    rule_version TEXT NOT NULL,
    status TEXT NOT NULL,
    target TEXT NOT NULL,
    unit_id INTEGER REFERENCES units (id),
    erp_document_id TEXT,
    created_at INTEGER NOT NULL,
    posted_at INTEGER,
    last_error TEXT
);
CREATE INDEX journals_status ON journals (status, created_at);
CREATE INDEX journals_created ON journals (created_at);

CREATE TABLE journal_lines (
    journal_key TEXT NOT NULL REFERENCES journals (key),
    line_no INTEGER NOT NULL,
    account TEXT NOT NULL,
    debit TEXT NOT NULL,
    credit TEXT NOT NULL,
    description TEXT NOT NULL,
    dimensions TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (journal_key, line_no)
);

-- Every value of every line's ``source`` references, for keys_by_source.
CREATE TABLE journal_line_refs (
    value TEXT NOT NULL,
    journal_key TEXT NOT NULL REFERENCES journals (key),
    PRIMARY KEY (value, journal_key)
) WITHOUT ROWID;

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    journal_key TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_after INTEGER NOT NULL,
    document_id TEXT,
    last_error TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (target, status, run_after);
CREATE INDEX outbox_status ON outbox (status);

CREATE TABLE exceptions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    dedupe_key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    subject TEXT NOT NULL,
    opened_at INTEGER NOT NULL,
    resolved_at INTEGER,
    resolved_by TEXT
);
CREATE INDEX exceptions_status ON exceptions (status);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_subject ON audit_log (subject_type, subject_id);
