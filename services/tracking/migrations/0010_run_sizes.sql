-- A run is answered in one message (GetRun, a page of SearchRuns), so what it holds is
-- bounded: its params, tags, latest metrics and inputs, each counted as its strings'
-- bytes in UTF-8 and 32 more (run_bytes). The bound is the service's (a quarter of its
-- largest message), given to each write.
--
-- run_sizes.bytes is at least what its run holds, kept up to date by every write that
-- adds entries, one row per run so that writes to a run that add nothing (a metric's
-- next point) never wait on it. A replaced tag or input counts again and a deleted one
-- is not taken off: when a write would pass the bound, the service counts the run
-- exactly (run_bytes) and tries once more (store/sizes.py).
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
INSERT INTO run_sizes (run_id, bytes) SELECT run_id, run_bytes(run_id) FROM runs;
-- The largest total: a page of runs reads each run's only when some run is that large
-- (sizes.loadable).
CREATE INDEX run_sizes_by_bytes ON run_sizes (bytes);
