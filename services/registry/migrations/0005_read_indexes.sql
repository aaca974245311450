-- Indexes that make a read cost what it answers rather than what the project stores.
-- Plain CREATE INDEX: the migration runs in one transaction, and each index blocks
-- writes to its table while it is built (seconds per million rows).

-- A model's latest version in a stage (MLflow's latest_versions, carried by every
-- answer holding a model) is one probe per stage, whatever its version count.
CREATE INDEX model_versions_by_stage ON model_versions (registered_model_id, stage, version DESC);
-- Lists of a project's models ordered by id.
CREATE INDEX registered_models_by_id ON registered_models (project, id);
-- Lists of a project's versions ordered by update time, number or id.
CREATE INDEX model_versions_by_update_time ON model_versions (project, update_time, id);
CREATE INDEX model_versions_by_number ON model_versions (project, version, id);
CREATE INDEX model_versions_by_id ON model_versions (project, id);
-- A model's versions by id, after its name: the order of versions listed by model name.
CREATE INDEX model_versions_by_model ON model_versions (registered_model_id, id);
-- Lists of artifacts ordered by create time, update time or id.
CREATE INDEX artifacts_by_create_time ON artifacts (project, create_time, id);
CREATE INDEX artifacts_by_update_time ON artifacts (project, update_time, id);
CREATE INDEX artifacts_by_id ON artifacts (project, id);
