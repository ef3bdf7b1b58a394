-- Guests: an invite is a credential for one track of one session; it ends with its session.
CREATE TABLE invites (
    id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    session_id TEXT COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    track TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    -- SHA-256 of the token, lower-case hex: the token itself is never stored.
    token_hash TEXT COLLATE "C" NOT NULL,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
);
CREATE UNIQUE INDEX invites_token_hash ON invites (token_hash);
CREATE INDEX invites_session_created ON invites (session_id, created_at);

-- A stop for everyone that is pending (null unless asked).
ALTER TABLE sessions ADD COLUMN stop_requested_at TIMESTAMP;
-- The track's client said it has sent everything; false again once a socket attaches.
ALTER TABLE tracks ADD COLUMN done BOOLEAN NOT NULL DEFAULT FALSE;
