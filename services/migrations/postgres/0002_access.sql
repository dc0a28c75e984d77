-- When an entry was last served (written in batches), for least-recently-used
-- eviction; and lookups by blob, for blobs shared by several entries.
ALTER TABLE entries ADD COLUMN IF NOT EXISTS last_access_ms BIGINT;
CREATE INDEX IF NOT EXISTS entries_by_access ON entries (last_access_ms);
CREATE INDEX IF NOT EXISTS entries_by_blob ON entries (blob);
