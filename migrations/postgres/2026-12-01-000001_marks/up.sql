-- One timeline: the sample at byte `byte_offset` of a track was captured at server time
-- `captured_at` (milliseconds since the Unix epoch, as the client sent it, fractions kept).
CREATE TABLE marks (
    session_id TEXT COLLATE "C" NOT NULL,
    track_name TEXT COLLATE "C" NOT NULL,
    byte_offset BIGINT NOT NULL,
    captured_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (session_id, track_name, byte_offset),
    FOREIGN KEY (session_id, track_name) REFERENCES tracks (session_id, name) ON DELETE CASCADE
);
