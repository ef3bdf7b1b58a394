DROP INDEX sessions_created_id;
DROP INDEX sessions_status_created_id;
CREATE INDEX sessions_created ON sessions (created_at);
CREATE INDEX sessions_status_created ON sessions (status, created_at);
