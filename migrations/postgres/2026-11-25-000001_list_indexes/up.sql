-- The list is ordered by (created_at DESC, id DESC): indexes with the id as well let it be read
-- straight from the index, without sorting every matching row for each page.
DROP INDEX sessions_created;
DROP INDEX sessions_status_created;
CREATE INDEX sessions_created_id ON sessions (created_at, id);
CREATE INDEX sessions_status_created_id ON sessions (status, created_at, id);
