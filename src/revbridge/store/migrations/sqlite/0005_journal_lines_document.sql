-- revbridge schema, version 5 (SQLite): a journal's lines are one JSON document in its
-- row (journals.lines) instead of a row per line in journal_lines. Lines are only ever
-- read and written with their journal, and a remittance journal has thousands of them:
-- one row costs far less to write, index, commit and read back than thousands.
-- The same meaning as migrations/postgres/0005_journal_lines_document.sql.
--
-- The document (store/codec.py lines_to_json):
--   {"dimensions": [{...}, ...], "sources": [{...}, ...],
--    "lines": [[account, debit, credit, description, dimensions no, source no], ...]}
-- Amounts are decimal strings, as in journal_lines. Lines moved from journal_lines keep
-- their order and each names its own dimension set and source.
-- journal_line_refs (for keys_by_source) stays as it is.

ALTER TABLE journals ADD COLUMN lines TEXT NOT NULL
    DEFAULT '{"dimensions":[],"sources":[],"lines":[]}';

UPDATE journals
SET lines = (
    SELECT json_object(
        'dimensions', json_group_array(json(l.dimensions)),
        'sources', json_group_array(json(l.source)),
        'lines', json_group_array(
            json_array(l.account, l.debit, l.credit, l.description, l.n, l.n)
        )
    )
    FROM (
        SELECT account, debit, credit, description, dimensions, source,
               row_number() OVER (ORDER BY line_no) - 1 AS n
        FROM journal_lines
        WHERE journal_key = journals.key
        ORDER BY line_no
    ) AS l
)
WHERE EXISTS (SELECT 1 FROM journal_lines WHERE journal_key = journals.key);

DROP TABLE journal_lines;
