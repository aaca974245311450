-- A run is answered in one message (GetRun, a page of SearchRuns), so what it holds is
-- bounded: its params, tags, latest metrics and inputs, each counted as its strings'
-- bytes in UTF-8 and 32 more (run_bytes). The bound is the service's (a quarter of its
-- largest message), given to each write.
--
-- run_sizes.bytes is what its run holds, kept by every write that adds, replaces or
-- deletes entries (store/sizes.py), one row per run so that writes to a run that add
-- nothing (a metric's next point) never wait on it. Two writes racing to add the same
-- new key both count it, which leaves the total above what the run holds; so when a
-- write would pass the bound, the service counts the run exactly and tries once more.
CREATE FUNCTION run_bytes(run uuid) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT (SELECT coalesce(sum(octet_length(key) + octet_length(value) + 32), 0)
            FROM tracking.params WHERE run_id = run)
         + (SELECT coalesce(sum(octet_length(key) + octet_length(value) + 32), 0)
            FROM tracking.tags WHERE run_id = run)
         + (SELECT coalesce(sum(octet_length(key) + 32), 0)
            FROM tracking.latest_metrics WHERE run_id = run)
         + (SELECT coalesce(sum(octet_length(kind) + octet_length(name) + octet_length(uri)
                                + octet_length(digest) + octet_length(context) + 32), 0)
            FROM tracking.run_inputs WHERE run_id = run)
$$;

-- total, unless it passes bound: then the statement fails (check_violation of
-- "run_bytes_bound") and nothing of it is applied.
CREATE FUNCTION run_bytes_within(total bigint, bound bigint) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF total > bound THEN
        RAISE EXCEPTION 'a run may hold % bytes; this write would take it to %', bound, total
            USING ERRCODE = 'check_violation', CONSTRAINT = 'run_bytes_bound';
    END IF;
    RETURN total;
END
$$;

CREATE TABLE run_sizes (
    run_id uuid PRIMARY KEY REFERENCES runs ON DELETE CASCADE,
    bytes bigint NOT NULL
);

-- Every run has its row, whoever inserts it: during a rolling upgrade, servers of the
-- version before keep creating runs after this migration. (Entries they add meanwhile
-- are not counted until the run is next counted exactly: see docs/deploy.md.)
CREATE FUNCTION size_new_runs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tracking.run_sizes (run_id, bytes) SELECT run_id, 0 FROM created;
    RETURN NULL;
END
$$;
CREATE TRIGGER runs_sized AFTER INSERT ON runs
    REFERENCING NEW TABLE AS created FOR EACH STATEMENT EXECUTE FUNCTION size_new_runs();

-- The runs there are, table by table rather than run by run.
INSERT INTO run_sizes (run_id, bytes)
SELECT r.run_id, coalesce(sum(e.bytes), 0)
FROM runs r LEFT JOIN (
    SELECT run_id, octet_length(key) + octet_length(value) + 32 FROM params
    UNION ALL SELECT run_id, octet_length(key) + octet_length(value) + 32 FROM tags
    UNION ALL SELECT run_id, octet_length(key) + 32 FROM latest_metrics
    UNION ALL SELECT run_id, octet_length(kind) + octet_length(name) + octet_length(uri)
                             + octet_length(digest) + octet_length(context) + 32
              FROM run_inputs
) AS e(run_id, bytes) USING (run_id)
GROUP BY r.run_id;

-- The largest total: a page of runs reads each run's only when some run is that large
-- (sizes.loadable). It makes each change of a total write an index entry, which only
-- writes that add, replace or delete entries do.
CREATE INDEX run_sizes_by_bytes ON run_sizes (bytes);
