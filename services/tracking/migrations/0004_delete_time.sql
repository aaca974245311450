-- When an experiment or run was soft-deleted (NULL while active), so garbage collection
-- removes what was deleted before its cut-off. Things deleted before this migration
-- count as deleted now: they wait one more retention period rather than going at once.
ALTER TABLE experiments ADD COLUMN delete_time timestamptz;
ALTER TABLE runs ADD COLUMN delete_time timestamptz;
UPDATE experiments SET delete_time = now() WHERE lifecycle_stage = 2;
UPDATE runs SET delete_time = now() WHERE lifecycle_stage = 2;
CREATE INDEX experiments_deleted ON experiments (delete_time) WHERE lifecycle_stage = 2;
CREATE INDEX runs_deleted ON runs (delete_time) WHERE lifecycle_stage = 2;
