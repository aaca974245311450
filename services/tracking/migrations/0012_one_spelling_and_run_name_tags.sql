-- Artifact locations in one spelling. CreateExperiment takes a location in its one
-- spelling only since (validation.artifact_location): the purge compares locations as
-- text, and another spelling of a location another experiment keeps (the scheme's
-- case, leading spaces, tabs, all of which every reader of a location drops) did not
-- look shared, so purging one experiment took the other's files. Locations stored
-- before, and their runs' artifact URIs, are written in that spelling here.
-- A location in its one spelling as urlsplit reads it: tabs and line breaks dropped
-- anywhere, control characters and spaces before it, the scheme in lower case.
CREATE FUNCTION spelled(location text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN bare ~ '^[A-Za-z][A-Za-z0-9+.-]*:'
                THEN lower(substring(bare FROM '^[A-Za-z][A-Za-z0-9+.-]*:'))
                     || substring(bare FROM '^[A-Za-z][A-Za-z0-9+.-]*:(.*)$')
                ELSE location END
    FROM (SELECT regexp_replace(regexp_replace(location, E'[\\t\\r\\n]', '', 'g'),
                                E'^[\\x01-\\x20]+', '') AS bare) b
$$;
UPDATE experiments SET artifact_location = spelled(artifact_location)
WHERE artifact_location <> '' AND artifact_location <> spelled(artifact_location);
UPDATE runs SET artifact_uri = spelled(artifact_uri) WHERE artifact_uri <> spelled(artifact_uri);
DROP FUNCTION spelled(text);

-- Purging a run looks for experiments whose location lies in or under the run's
-- directory (store/purge.py, unshared): the locations' first 600 characters in byte
-- order serve it (a whole location, of up to 2,048 characters of up to 4 bytes, could
-- pass the 2,704 bytes of an index entry).
CREATE INDEX IF NOT EXISTS experiments_by_location
    ON experiments ((substr(artifact_location, 1, 600) COLLATE "C"));

-- MLflow's tag mlflow.runName is a run's name (docs/tracking.md, "Runs"), kept as the
-- name alone. A run tagged so before takes the tag's value as its name when it is
-- plainly one (1-500 letters, digits, spaces inside and _ . : / @ + -, which the
-- service's rule for names takes too), and the tag goes, with what it counted in its
-- run's total; any other value stays a tag, which delete_tag removes.
WITH named AS (
    DELETE FROM tags
    WHERE key = 'mlflow.runName' AND char_length(value) BETWEEN 1 AND 500
      AND value ~ '^[[:alnum:]_.:/@+-]([[:alnum:] _.:/@+-]*[[:alnum:]_.:/@+-])?$'
    RETURNING run_id, value, octet_length(key) + octet_length(value) + 32 AS bytes
), renamed AS (
    UPDATE runs r SET run_name = n.value FROM named n WHERE r.run_id = n.run_id
)
UPDATE run_sizes s SET bytes = s.bytes - n.bytes FROM named n WHERE s.run_id = n.run_id;
