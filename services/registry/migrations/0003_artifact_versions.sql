-- Versioned artifacts (ML Aide's): a standalone artifact whose every creation under one
-- name is a new version, numbered 1, 2, 3 ... per project and name without gaps, with a
-- free-form type ("dataset", "model", ...) and the run that made it.
-- Unversioned artifacts keep version NULL.

ALTER TABLE artifacts
    ADD COLUMN version bigint,
    ADD COLUMN type text NOT NULL DEFAULT '',
    ADD COLUMN source_run_id text NOT NULL DEFAULT '';

-- A name's versions are its own rows: the name stays unique per (project, model version)
-- among unversioned artifacts, and each version number is unique per name.
DROP INDEX artifacts_name;
CREATE UNIQUE INDEX artifacts_name
    ON artifacts (project, coalesce(model_version_id, 0), name, coalesce(version, 0));

-- The next version number of each versioned name. Taking it locks the row, so
-- concurrent creations queue and numbers stay gapless; a failed creation rolls it back
-- (as registered_models.next_version does for model versions). Kept when versions are
-- deleted, so a number is never given out twice.
CREATE TABLE artifact_names (
    project text NOT NULL,
    name text NOT NULL,
    next_version bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (project, name)
);
