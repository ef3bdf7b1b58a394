-- Portable SQL only: the PostgreSQL migrations mirror these tables type for type.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    title TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    last_heartbeat TIMESTAMP NOT NULL,
    completed_at TIMESTAMP
);
-- The sweeper's query: active sessions silent since before a cutoff.
CREATE INDEX sessions_status_heartbeat ON sessions (status, last_heartbeat);
-- The history page and the list endpoint: newest first, optionally by status.
CREATE INDEX sessions_created ON sessions (created_at);
CREATE INDEX sessions_status_created ON sessions (status, created_at);

CREATE TABLE tracks (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    sample_rate INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    format TEXT NOT NULL,
    data_bytes BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (session_id, name)
);

CREATE TABLE segments (
    session_id TEXT NOT NULL,
    track_name TEXT NOT NULL,
    seq INTEGER NOT NULL,
    start_offset BIGINT NOT NULL,
    started_at TIMESTAMP NOT NULL,
    PRIMARY KEY (session_id, track_name, seq),
    FOREIGN KEY (session_id, track_name) REFERENCES tracks (session_id, name) ON DELETE CASCADE
);
