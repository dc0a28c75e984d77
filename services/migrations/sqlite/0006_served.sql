-- How many times each entry was served from the cache, and when last
-- (written in batches with the access times), for operators.
ALTER TABLE entries ADD COLUMN served_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE entries ADD COLUMN last_served_ms INTEGER;
