-- One row per cached (or stored) artifact. A row is written only after its
-- blob is complete and durable: the row is what makes an entry visible.
CREATE TABLE entries (
    key           TEXT PRIMARY KEY NOT NULL,
    remote        TEXT NOT NULL,
    path          TEXT NOT NULL,
    blob          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    class         TEXT NOT NULL,
    headers       TEXT NOT NULL,
    cached_at_ms  INTEGER NOT NULL,
    expires_at_ms INTEGER
);

CREATE INDEX entries_by_remote_path ON entries (remote, path);
