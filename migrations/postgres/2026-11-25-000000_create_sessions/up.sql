-- The PostgreSQL mirror of migrations/sqlite, type for type (one schema: src/db/schema.rs).
-- Text compares byte for byte (COLLATE "C"), as in SQLite, whatever the cluster's locale: the
-- same ids, names and orders on both backends.
CREATE TABLE sessions (
    id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    title TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
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
    session_id TEXT COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    name TEXT COLLATE "C" NOT NULL,
    sample_rate INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    format TEXT COLLATE "C" NOT NULL,
    data_bytes BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (session_id, name)
);

CREATE TABLE segments (
    session_id TEXT COLLATE "C" NOT NULL,
    track_name TEXT COLLATE "C" NOT NULL,
    seq INTEGER NOT NULL,
    start_offset BIGINT NOT NULL,
    started_at TIMESTAMP NOT NULL,
    PRIMARY KEY (session_id, track_name, seq),
    FOREIGN KEY (session_id, track_name) REFERENCES tracks (session_id, name) ON DELETE CASCADE
);
