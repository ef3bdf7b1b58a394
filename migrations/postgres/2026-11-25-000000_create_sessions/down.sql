DROP TABLE segments;
DROP TABLE tracks;
DROP TABLE sessions;
