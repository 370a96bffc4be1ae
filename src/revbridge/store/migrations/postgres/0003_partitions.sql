-- revbridge schema, version 3 (PostgreSQL): raw messages and events in monthly partitions, so
-- that retention drops a month as a whole (DESIGN.md §6). migrations/sqlite/0003_partitions.sql
-- records the same months without physical partitions.
--
-- The scheme (planned in 0001), and why:
--   * raw_messages and raw_parts are PARTITIONED BY RANGE of the raw message id, events and
--     event_keys BY RANGE of the event position: keys that only grow, that every primary key
--     already holds, and that get(id), read_from(position) and the retention job name, so
--     those prune to one partition. Partitioning by received_at / recorded_at instead would
--     force the timestamp into every primary key and every reference, and make get(id) probe
--     every partition.
--   * One partition per month, each a block of 1,000,000,000 keys [low, low + 10^9) created
--     ahead of time with fixed bounds. When a month begins, the retention job (`revbridge
--     retention`, also run by `serve`) moves the id sequence to the new block's low with
--     ALTER SEQUENCE ... RESTART, which is transactional: a rolled-back move changes nothing.
--     Bounds known in advance mean no partition is ever split, re-attached or scanned. Rows
--     of the first hours of a month land in the previous month's partition until the job
--     runs; that is why retention judges a month by when it stopped receiving rows
--     (closed_at) and by its newest row, never by its label alone. A month of more than 10^9
--     keys spills into the next block, which the job creates a month ahead: nothing is
--     refused. Keys stay below 2^53 for 9 million months (safe in JSON / JavaScript).
--   * partitions records, per family ('raw': raw_messages + raw_parts; 'events': events +
--     event_keys) and month: the key range, when new rows started to go there (opened_at;
--     NULL while prepared ahead) and when they stopped (closed_at; NULL while current). The
--     physical tables are named <parent>_yYYYYmMM (raw_messages_y2026m01).
--   * events.id stays unique across partitions through event_ids (id PRIMARY KEY): a
--     statement trigger on events fills it, whatever inserts events and however many per
--     statement; dropping a month deletes its position range from it (index on position).
--   * units keep naming their raw message, checked by a trigger (with the same FOR KEY SHARE
--     row lock a foreign key takes) instead of a foreign key: a unit is the audit record of
--     what a raw message held (control numbers, hash, byte range), journals refer to it, so
--     it outlives the bytes; and a foreign key into a partitioned table makes every DETACH
--     search the referencing table. raw_parts lose their foreign key for the second reason:
--     a month's parts are dropped with its messages, in the same transaction.
--
-- Existing rows stay where they are: each table becomes the first partition, labelled with
-- the current month, for keys [1, the first block boundary above every key used so far).
-- Attaching it checks its rows once (a scan, no copy). The new tables name their CHECK
-- constraints as the old ones are named: attaching matches them by name.

-- Where the id sequences stand (dropping an identity drops its sequence).
CREATE TEMPORARY TABLE kept_sequences ON COMMIT DROP AS
SELECT 'raw' AS family, last_value, is_called,
       (greatest(CASE WHEN is_called THEN last_value ELSE last_value - 1 END,
                 (SELECT coalesce(max(id), 0) FROM raw_messages),
                 (SELECT coalesce(max(raw_id), 0) FROM raw_parts))
        / 1000000000 + 1) * 1000000000 AS first_high
FROM raw_messages_id_seq
UNION ALL
SELECT 'events', last_value, is_called,
       (greatest(CASE WHEN is_called THEN last_value ELSE last_value - 1 END,
                 (SELECT coalesce(max(position), 0) FROM events),
                 (SELECT coalesce(max(position), 0) FROM event_keys))
        / 1000000000 + 1) * 1000000000
FROM events_position_seq;

CREATE TABLE partitions (
    family text NOT NULL CHECK (family IN ('raw', 'events')),
    month date NOT NULL CHECK (extract(day FROM month) = 1),
    low bigint NOT NULL,
    high bigint CHECK (high > low),
    opened_at timestamptz,
    closed_at timestamptz,
    PRIMARY KEY (family, month)
);

-- ------------------------------------------------------------------ references that go

ALTER TABLE raw_parts DROP CONSTRAINT raw_parts_raw_id_fkey;
ALTER TABLE units DROP CONSTRAINT units_raw_id_fkey;

CREATE FUNCTION units_check_raw_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM raw_messages WHERE id = NEW.raw_id FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unit names raw message %, which does not exist', NEW.raw_id
            USING ERRCODE = 'foreign_key_violation', TABLE = 'units', COLUMN = 'raw_id';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER units_raw_message_exists BEFORE INSERT OR UPDATE OF raw_id ON units
    FOR EACH ROW EXECUTE FUNCTION units_check_raw_message();

-- ------------------------------------------------------------------------ raw messages

ALTER TABLE raw_messages RENAME TO raw_messages_first;
ALTER TABLE raw_messages_first RENAME CONSTRAINT raw_messages_pkey TO raw_messages_first_pkey;
ALTER INDEX raw_messages_sha256 RENAME TO raw_messages_first_sha256;
ALTER INDEX raw_messages_received_at RENAME TO raw_messages_first_received_at;
ALTER TABLE raw_messages_first ALTER COLUMN id DROP IDENTITY;

CREATE TABLE raw_messages (
    id bigint GENERATED BY DEFAULT AS IDENTITY (SEQUENCE NAME raw_messages_id_seq),
    channel text NOT NULL,
    name text NOT NULL,
    content_type text NOT NULL,
    sha256 text NOT NULL,
    size bigint NOT NULL CONSTRAINT raw_messages_size_check CHECK (size >= 0),
    received_at timestamptz NOT NULL,
    PRIMARY KEY (id)
) PARTITION BY RANGE (id);
CREATE INDEX raw_messages_sha256 ON raw_messages (sha256);
CREATE INDEX raw_messages_received_at ON raw_messages (received_at);

ALTER TABLE raw_parts RENAME TO raw_parts_first;
ALTER TABLE raw_parts_first RENAME CONSTRAINT raw_parts_pkey TO raw_parts_first_pkey;

CREATE TABLE raw_parts (
    raw_id bigint NOT NULL,
    part_no integer NOT NULL,
    byte_offset bigint NOT NULL CONSTRAINT raw_parts_byte_offset_check CHECK (byte_offset >= 0),
    size integer NOT NULL CONSTRAINT raw_parts_size_check CHECK (size > 0),
    content bytea NOT NULL,
    PRIMARY KEY (raw_id, part_no)
) PARTITION BY RANGE (raw_id);

-- ------------------------------------------------------------------------------ events

ALTER TABLE events RENAME TO events_first;
ALTER TABLE events_first RENAME CONSTRAINT events_pkey TO events_first_pkey;
ALTER TABLE events_first DROP CONSTRAINT events_id_key;
ALTER INDEX events_correlation RENAME TO events_first_correlation;
ALTER TABLE events_first ALTER COLUMN position DROP IDENTITY;

CREATE TABLE events (
    position bigint GENERATED BY DEFAULT AS IDENTITY (SEQUENCE NAME events_position_seq),
    id text NOT NULL,
    type text NOT NULL,
    schema_version integer NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    entity text,
    facility text,
    keys json NOT NULL,
    correlation_id text NOT NULL,
    causation_id text,
    source json NOT NULL,
    data json NOT NULL,
    PRIMARY KEY (position)
) PARTITION BY RANGE (position);
CREATE INDEX events_correlation ON events (correlation_id);

ALTER TABLE event_keys RENAME TO event_keys_first;
ALTER TABLE event_keys_first RENAME CONSTRAINT event_keys_pkey TO event_keys_first_pkey;

CREATE TABLE event_keys (
    value text NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (value, position)
) PARTITION BY RANGE (position);

-- Event ids, unique across every partition.
CREATE TABLE event_ids (
    id text PRIMARY KEY,
    position bigint NOT NULL
);
CREATE INDEX event_ids_position ON event_ids (position);
INSERT INTO event_ids (id, position) SELECT id, position FROM events_first;

CREATE FUNCTION events_claim_ids() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_ids (id, position) SELECT id, position FROM appended;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_unique_id AFTER INSERT ON events
    REFERENCING NEW TABLE AS appended
    FOR EACH STATEMENT EXECUTE FUNCTION events_claim_ids();

-- ------------------------------------------- the existing rows: the first month's partitions

DO $$
DECLARE
    this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    suffix text := to_char(this_month, '"y"YYYY"m"MM');
    raw_end bigint := (SELECT first_high FROM kept_sequences WHERE family = 'raw');
    events_end bigint := (SELECT first_high FROM kept_sequences WHERE family = 'events');
BEGIN
    EXECUTE format('ALTER TABLE raw_messages ATTACH PARTITION raw_messages_first'
                   ' FOR VALUES FROM (1) TO (%s)', raw_end);
    EXECUTE format('ALTER TABLE raw_parts ATTACH PARTITION raw_parts_first'
                   ' FOR VALUES FROM (1) TO (%s)', raw_end);
    EXECUTE format('ALTER TABLE events ATTACH PARTITION events_first'
                   ' FOR VALUES FROM (1) TO (%s)', events_end);
    EXECUTE format('ALTER TABLE event_keys ATTACH PARTITION event_keys_first'
                   ' FOR VALUES FROM (1) TO (%s)', events_end);
    EXECUTE format('ALTER TABLE raw_messages_first RENAME TO %I', 'raw_messages_' || suffix);
    EXECUTE format('ALTER TABLE raw_parts_first RENAME TO %I', 'raw_parts_' || suffix);
    EXECUTE format('ALTER TABLE events_first RENAME TO %I', 'events_' || suffix);
    EXECUTE format('ALTER TABLE event_keys_first RENAME TO %I', 'event_keys_' || suffix);
    INSERT INTO partitions (family, month, low, high, opened_at)
    VALUES ('raw', this_month, 1, raw_end, now()), ('events', this_month, 1, events_end, now());
END
$$;

-- The sequences go on from where they were.
SELECT setval('raw_messages_id_seq', last_value, is_called)
FROM kept_sequences WHERE family = 'raw';
SELECT setval('events_position_seq', last_value, is_called)
FROM kept_sequences WHERE family = 'events';
