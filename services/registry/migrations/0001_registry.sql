-- Registered models, model versions and their artifacts. Every row belongs to a project.
-- State, stage and artifact-state numbers are those of the cairn.registry.v1 enums.
-- Custom properties are typed JSON: {"key": {"int": "12"} | {"double": 1.5} | ...}.

CREATE TABLE registered_models (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project text NOT NULL,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    owner text NOT NULL DEFAULT '',
    state smallint NOT NULL DEFAULT 1,
    external_id text,
    custom_properties jsonb NOT NULL DEFAULT '{}',
    tags jsonb NOT NULL DEFAULT '{}',
    -- The next version number. Taking it locks the row, so concurrent creations
    -- queue and numbers stay gapless; a failed creation rolls it back.
    next_version bigint NOT NULL DEFAULT 1,
    create_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (project, name)
);
CREATE INDEX registered_models_by_create_time ON registered_models (project, create_time, id);
CREATE INDEX registered_models_by_update_time ON registered_models (project, update_time, id);

CREATE TABLE model_versions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project text NOT NULL,
    registered_model_id bigint NOT NULL REFERENCES registered_models ON DELETE CASCADE,
    name text NOT NULL,
    version bigint NOT NULL,
    author text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    state smallint NOT NULL DEFAULT 1,
    stage smallint NOT NULL DEFAULT 0,
    source_run_id text NOT NULL DEFAULT '',
    source_uri text NOT NULL DEFAULT '',
    external_id text,
    custom_properties jsonb NOT NULL DEFAULT '{}',
    tags jsonb NOT NULL DEFAULT '{}',
    create_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (registered_model_id, name),
    UNIQUE (registered_model_id, version)
);
CREATE INDEX model_versions_by_project ON model_versions (project, create_time, id);

CREATE TABLE aliases (
    registered_model_id bigint NOT NULL REFERENCES registered_models ON DELETE CASCADE,
    alias text NOT NULL,
    model_version_id bigint NOT NULL REFERENCES model_versions ON DELETE CASCADE,
    PRIMARY KEY (registered_model_id, alias)
);
CREATE INDEX aliases_by_version ON aliases (model_version_id);

CREATE TABLE artifacts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project text NOT NULL,
    model_version_id bigint REFERENCES model_versions ON DELETE CASCADE,
    kind smallint NOT NULL, -- 1 model, 2 doc
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    uri text NOT NULL DEFAULT '',
    state smallint NOT NULL DEFAULT 0,
    external_id text,
    custom_properties jsonb NOT NULL DEFAULT '{}',
    model_format_name text NOT NULL DEFAULT '',
    model_format_version text NOT NULL DEFAULT '',
    storage_key text NOT NULL DEFAULT '',
    storage_path text NOT NULL DEFAULT '',
    service_account_name text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Names are unique within a version, and among the standalone artifacts of a project.
CREATE UNIQUE INDEX artifacts_name ON artifacts (project, coalesce(model_version_id, 0), name);
CREATE INDEX artifacts_by_version ON artifacts (model_version_id, create_time, id);

-- External ids are unique among contexts (registered models and model versions
-- together) and among artifacts (model and doc artifacts together), per project.
CREATE TABLE external_ids (
    project text NOT NULL,
    scope text NOT NULL CHECK (scope IN ('context', 'artifact')),
    external_id text NOT NULL,
    PRIMARY KEY (project, scope, external_id)
);

-- Keeps external_ids in step with the three tables, cascaded deletes included. A
-- taken id fails the insert with a unique violation on external_ids_pkey.
CREATE FUNCTION sync_external_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.external_id IS NOT NULL
       AND (TG_OP = 'DELETE' OR NEW.external_id IS DISTINCT FROM OLD.external_id) THEN
        DELETE FROM registry.external_ids
        WHERE project = OLD.project AND scope = TG_ARGV[0] AND external_id = OLD.external_id;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.external_id IS NOT NULL
       AND (TG_OP = 'INSERT' OR NEW.external_id IS DISTINCT FROM OLD.external_id) THEN
        INSERT INTO registry.external_ids (project, scope, external_id)
        VALUES (NEW.project, TG_ARGV[0], NEW.external_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER registered_models_external_id AFTER INSERT OR UPDATE OF external_id OR DELETE
    ON registered_models FOR EACH ROW EXECUTE FUNCTION sync_external_id('context');
CREATE TRIGGER model_versions_external_id AFTER INSERT OR UPDATE OF external_id OR DELETE
    ON model_versions FOR EACH ROW EXECUTE FUNCTION sync_external_id('context');
CREATE TRIGGER artifacts_external_id AFTER INSERT OR UPDATE OF external_id OR DELETE
    ON artifacts FOR EACH ROW EXECUTE FUNCTION sync_external_id('artifact');
