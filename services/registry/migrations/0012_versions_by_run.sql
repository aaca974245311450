-- The versions registered from one run: MLflow's search_model_versions("run_id = '<id>'"),
-- which its users call to find what a run produced. Without this index each page read
-- every version of the project (25,000 rows for a page of none). Plain CREATE INDEX, as
-- in 0005: writes to model_versions wait while it is built (about a second per million
-- versions).
CREATE INDEX model_versions_by_run ON model_versions (project, source_run_id);
