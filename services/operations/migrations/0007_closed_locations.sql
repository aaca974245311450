-- A location no owner takes again once let go of: a run's directory, named by the run's
-- id, which is never reused. The artifacts service deletes everything under it, however
-- late its upload began, and refuses every write under it after (artifacts 0015);
-- another location may be an experiment's chosen again, whose later files are kept.
ALTER TABLE discarded_locations ADD COLUMN closed boolean NOT NULL DEFAULT false;
-- Looked for by every upload (artifacts' store.py, _check_open): closed as soon as queued.
CREATE INDEX discarded_locations_closed ON discarded_locations (project, path) WHERE closed;
