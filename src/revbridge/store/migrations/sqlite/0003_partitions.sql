-- revbridge schema, version 3 (SQLite): the months of raw messages and events, for retention
-- (DESIGN.md §6). The same meaning as migrations/postgres/0003_partitions.sql, without
-- physical partitions: SQLite has none, so a month is a recorded key range and retention
-- deletes it in bulk, in one transaction (the embedded trade-off; see store/sqlite_retention.py).

-- Per family ('raw': raw_messages + raw_parts by raw message id; 'events': events +
-- event_keys by position) and month ('YYYY-MM-01', UTC): keys [low, high), high NULL while
-- the month is current (equal to low for a month that received nothing); when new rows
-- started (opened_at) and stopped (closed_at) going there.
CREATE TABLE partitions (
    family TEXT NOT NULL CHECK (family IN ('raw', 'events')),
    month TEXT NOT NULL,
    low INTEGER NOT NULL,
    high INTEGER CHECK (high >= low),
    opened_at INTEGER,
    closed_at INTEGER,
    PRIMARY KEY (family, month)
);

-- Everything stored so far belongs to the current month (the first one).
INSERT INTO partitions (family, month, low, high, opened_at, closed_at)
SELECT family, strftime('%Y-%m-01', 'now'), 1, NULL,
       CAST(strftime('%s', 'now') AS INTEGER) * 1000000, NULL
FROM (SELECT 'raw' AS family UNION ALL SELECT 'events');

-- Units outlive the bytes of their raw message: a unit is the audit record of what the
-- message held (control numbers, hash, byte range) and journals refer to it. So units no
-- longer have a foreign key to raw_messages; a trigger refuses a unit naming a raw message
-- that does not exist, as the foreign key did. SQLite cannot drop a foreign key: the table
-- is rebuilt, its rows and AUTOINCREMENT high-water mark kept. journals.unit_id refers to
-- units by name, so its check is deferred to the commit, when units exists again.
PRAGMA defer_foreign_keys = ON;

CREATE TEMPORARY TABLE kept_units AS SELECT * FROM units;
CREATE TEMPORARY TABLE kept_units_sequence AS
SELECT seq FROM sqlite_sequence WHERE name = 'units';

DROP TABLE units;

CREATE TABLE units (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    raw_id INTEGER NOT NULL,
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
INSERT INTO units (id, raw_id, kind, natural_key, content_hash, byte_start, byte_end,
                   first_segment, envelope, status, reason, created_at)
SELECT id, raw_id, kind, natural_key, content_hash, byte_start, byte_end,
       first_segment, envelope, status, reason, created_at
FROM kept_units;
DELETE FROM sqlite_sequence WHERE name = 'units';
INSERT INTO sqlite_sequence (name, seq) SELECT 'units', seq FROM kept_units_sequence;
DROP TABLE kept_units;
DROP TABLE kept_units_sequence;

CREATE INDEX units_natural_key ON units (natural_key, content_hash);
-- One live unit per (natural key, bytes); later copies may only be recorded as duplicates.
CREATE UNIQUE INDEX units_live_key ON units (natural_key, content_hash)
    WHERE status <> 'duplicate';
CREATE INDEX units_raw ON units (raw_id);

CREATE TRIGGER units_raw_message_exists BEFORE INSERT ON units
WHEN NOT EXISTS (SELECT 1 FROM raw_messages WHERE id = NEW.raw_id)
BEGIN
    SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed: units.raw_id names no raw message');
END;

CREATE TRIGGER units_raw_message_exists_on_update BEFORE UPDATE OF raw_id ON units
WHEN NOT EXISTS (SELECT 1 FROM raw_messages WHERE id = NEW.raw_id)
BEGIN
    SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed: units.raw_id names no raw message');
END;
