-- Entries and bytes per remote, kept by triggers as rows come and go (issue
-- 19): the listing page, /metrics and every eviction round read one row per
-- remote instead of counting and summing the whole table. A remote whose
-- entries are all gone keeps a row of zeros.
CREATE TABLE IF NOT EXISTS usage (
    remote  TEXT PRIMARY KEY NOT NULL,
    entries BIGINT NOT NULL,
    bytes   BIGINT NOT NULL
);
INSERT INTO usage (remote, entries, bytes)
    SELECT remote, COUNT(*), COALESCE(SUM(size), 0) FROM entries GROUP BY remote
    ON CONFLICT (remote) DO NOTHING;

-- Inserts and deletes count once per statement (a bulk COPY or a flush is one
-- update per remote, not one per row). Counter rows are taken in remote order
-- so that two statements touching several remotes never deadlock.
CREATE OR REPLACE FUNCTION usage_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage (remote, entries, bytes)
        SELECT remote, COUNT(*), COALESCE(SUM(size), 0) FROM usage_new GROUP BY remote ORDER BY remote
    ON CONFLICT (remote) DO UPDATE
        SET entries = usage.entries + excluded.entries, bytes = usage.bytes + excluded.bytes;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION usage_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM usage WHERE remote IN (SELECT remote FROM usage_old) ORDER BY remote FOR UPDATE;
    UPDATE usage SET entries = usage.entries - gone.n, bytes = usage.bytes - gone.b
        FROM (SELECT remote, COUNT(*) AS n, COALESCE(SUM(size), 0) AS b FROM usage_old GROUP BY remote) AS gone
        WHERE usage.remote = gone.remote;
    RETURN NULL;
END $$;
-- Updates row by row, and only those that change a size (an upsert replacing
-- an entry): a batch of access times or expiries never fires it.
CREATE OR REPLACE FUNCTION usage_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE usage SET entries = entries - 1, bytes = bytes - OLD.size WHERE remote = OLD.remote;
    INSERT INTO usage (remote, entries, bytes) VALUES (NEW.remote, 1, NEW.size)
    ON CONFLICT (remote) DO UPDATE SET entries = usage.entries + 1, bytes = usage.bytes + excluded.bytes;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS usage_after_insert ON entries;
CREATE TRIGGER usage_after_insert AFTER INSERT ON entries
    REFERENCING NEW TABLE AS usage_new FOR EACH STATEMENT EXECUTE FUNCTION usage_after_insert();
DROP TRIGGER IF EXISTS usage_after_delete ON entries;
CREATE TRIGGER usage_after_delete AFTER DELETE ON entries
    REFERENCING OLD TABLE AS usage_old FOR EACH STATEMENT EXECUTE FUNCTION usage_after_delete();
DROP TRIGGER IF EXISTS usage_after_update ON entries;
CREATE TRIGGER usage_after_update AFTER UPDATE OF remote, size ON entries FOR EACH ROW
    WHEN (OLD.remote IS DISTINCT FROM NEW.remote OR OLD.size IS DISTINCT FROM NEW.size)
    EXECUTE FUNCTION usage_after_update();

-- Rows in blob order, ties by key, read a page at a time off this index alone
-- (it holds every column the clean-up reads): the clean-up walks
-- them beside the blob store's own listing, which is bytewise, so blob keys
-- compare bytewise here too (COLLATE "C") instead of by the locale.
DROP INDEX IF EXISTS entries_by_blob;
ALTER TABLE entries ALTER COLUMN blob TYPE TEXT COLLATE "C";
CREATE INDEX IF NOT EXISTS entries_by_blob ON entries (blob, key, cached_at_ms);
