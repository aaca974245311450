-- One model's versions by update time: MLflow's search_model_versions("name = 'm'")
-- orders so by default, and read without this index every version of the model (or of
-- the project) was sorted for each page. Plain CREATE INDEX, as in 0005: writes to
-- model_versions wait while it is built (about a second per million versions).
CREATE INDEX model_versions_by_model_update_time
    ON model_versions (registered_model_id, update_time, id);
