-- How many times each entry was served from the cache, and when last
-- (written in batches with the access times), for operators.
ALTER TABLE entries ADD COLUMN IF NOT EXISTS served_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE entries ADD COLUMN IF NOT EXISTS last_served_ms BIGINT;
