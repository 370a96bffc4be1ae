-- revbridge schema, version 5 (PostgreSQL): a journal's lines are one JSON document in its
-- row (journals.lines) instead of a row per line in journal_lines. Lines are only ever
-- read and written with their journal, and a remittance journal has thousands of them:
-- one row costs far less to write, index, commit and read back than thousands.
-- The same meaning as migrations/sqlite/0005_journal_lines_document.sql.
--
-- The document (store/codec.py lines_to_json):
--   {"dimensions": [{...}, ...], "sources": [{...}, ...],
--    "lines": [[account, debit, credit, description, dimensions no, source no], ...]}
-- Amounts are decimal strings, as in journal_lines. Lines moved from journal_lines keep
-- their order and each names its own dimension set and source.
-- journal_line_refs (for keys_by_source) stays as it is.

ALTER TABLE journals ADD COLUMN lines json NOT NULL
    DEFAULT '{"dimensions":[],"sources":[],"lines":[]}';

UPDATE journals AS j
SET lines = (
    SELECT json_build_object(
        'dimensions', json_agg(l.dimensions ORDER BY l.line_no),
        'sources', json_agg(l.source ORDER BY l.line_no),
        'lines', json_agg(
            json_build_array(l.account, l.debit, l.credit, l.description, l.n, l.n)
            ORDER BY l.line_no
        )
    )
    FROM (
        SELECT line_no, account, debit, credit, description, dimensions, source,
               row_number() OVER (ORDER BY line_no) - 1 AS n
        FROM journal_lines
        WHERE journal_key = j.key
    ) AS l
)
WHERE EXISTS (SELECT 1 FROM journal_lines WHERE journal_key = j.key);

DROP TABLE journal_lines;
