-- When an entry was last served (written in batches), for least-recently-used
-- eviction; and lookups by blob, for blobs shared by several entries.
ALTER TABLE entries ADD COLUMN last_access_ms INTEGER;
CREATE INDEX entries_by_access ON entries (last_access_ms);
CREATE INDEX entries_by_blob ON entries (blob);
