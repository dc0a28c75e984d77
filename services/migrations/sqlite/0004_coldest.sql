-- Least recently served first, read in index order (issue 19): every row
-- has an access time (rows from before 0003 get the time they were stored),
-- so an eviction round reads the coldest rows off an index instead of
-- sorting the whole table by an expression each time.
UPDATE entries SET last_access_ms = cached_at_ms WHERE last_access_ms IS NULL;
DROP INDEX IF EXISTS entries_by_access;
CREATE INDEX entries_by_access ON entries (last_access_ms, key);
CREATE INDEX entries_by_remote_access ON entries (remote, last_access_ms, key);
