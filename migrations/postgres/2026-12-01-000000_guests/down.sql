ALTER TABLE tracks DROP COLUMN done;
ALTER TABLE sessions DROP COLUMN stop_requested_at;
DROP INDEX invites_session_created;
DROP INDEX invites_token_hash;
DROP TABLE invites;
