-- Every applied change updates its row's version in place (the key does
-- not change): room left on each page lets PostgreSQL keep the new version
-- on the same page without touching the index (a HOT update).

-- +goose Up
ALTER TABLE cdcflow.row_versions SET (fillfactor = 70);

-- +goose Down
ALTER TABLE cdcflow.row_versions RESET (fillfactor);
