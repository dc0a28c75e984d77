-- Entries and bytes per remote, kept by triggers as rows come and go (issue
-- 19): the listing page, /metrics and every eviction round read one row per
-- remote instead of counting and summing the whole table. A remote whose
-- entries are all gone keeps a row of zeros.
CREATE TABLE usage (
    remote  TEXT PRIMARY KEY NOT NULL,
    entries INTEGER NOT NULL,
    bytes   INTEGER NOT NULL
);
INSERT INTO usage (remote, entries, bytes)
    SELECT remote, COUNT(*), COALESCE(SUM(size), 0) FROM entries GROUP BY remote;

CREATE TRIGGER usage_after_insert AFTER INSERT ON entries BEGIN
    INSERT INTO usage (remote, entries, bytes) VALUES (NEW.remote, 1, NEW.size)
    ON CONFLICT (remote) DO UPDATE SET entries = entries + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER usage_after_delete AFTER DELETE ON entries BEGIN
    UPDATE usage SET entries = entries - 1, bytes = bytes - OLD.size WHERE remote = OLD.remote;
END;
-- An upsert that replaces an entry runs as an UPDATE: only a change of size
-- (or remote) moves a counter; an access time or an expiry never does.
CREATE TRIGGER usage_after_update AFTER UPDATE OF remote, size ON entries
WHEN OLD.remote IS NOT NEW.remote OR OLD.size IS NOT NEW.size BEGIN
    UPDATE usage SET entries = entries - 1, bytes = bytes - OLD.size WHERE remote = OLD.remote;
    INSERT INTO usage (remote, entries, bytes) VALUES (NEW.remote, 1, NEW.size)
    ON CONFLICT (remote) DO UPDATE SET entries = entries + 1, bytes = bytes + excluded.bytes;
END;

-- Rows in blob order, ties by key, read a page at a time off this index alone
-- (it holds every column the clean-up reads): the clean-up walks
-- them beside the blob store's own listing (bytewise, as SQLite's default
-- collation compares) instead of loading every row.
DROP INDEX IF EXISTS entries_by_blob;
CREATE INDEX entries_by_blob ON entries (blob, key, cached_at_ms);
