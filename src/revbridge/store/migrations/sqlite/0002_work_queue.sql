-- revbridge schema, version 2 (SQLite): the exception work queue and per-key job order.

-- Who works an item, and how it was closed (resolved, retried, resubmitted, written_off,
-- rejected).
ALTER TABLE exceptions ADD COLUMN assignee TEXT;
ALTER TABLE exceptions ADD COLUMN resolution TEXT;
CREATE INDEX exceptions_reason ON exceptions (reason, status);

CREATE TABLE exception_notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    exception_id INTEGER NOT NULL REFERENCES exceptions (id),
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX exception_notes_item ON exception_notes (exception_id);

-- Requests that need a second person: large write-offs, bulk replays.
CREATE TABLE approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    decided_by TEXT,
    decided_at INTEGER
);
CREATE INDEX approvals_status ON approvals (status);

-- Order per key: "is an earlier job of this key still unfinished?" by index.
DROP INDEX jobs_key;
CREATE INDEX jobs_key_id ON jobs (key, id);
