-- One row per cached (or stored) artifact. A row is written only after its
-- blob is complete and durable: the row is what makes an entry visible.
-- Paths sort bytewise (COLLATE "C") so that listing pages are stable.
CREATE TABLE IF NOT EXISTS entries (
    key           TEXT PRIMARY KEY NOT NULL,
    remote        TEXT NOT NULL,
    path          TEXT COLLATE "C" NOT NULL,
    blob          TEXT NOT NULL,
    size          BIGINT NOT NULL,
    class         TEXT NOT NULL,
    headers       TEXT NOT NULL,
    cached_at_ms  BIGINT NOT NULL,
    expires_at_ms BIGINT,
    policy        TEXT
);

CREATE INDEX IF NOT EXISTS entries_by_remote_path ON entries (remote, path);
