-- SearchExperiments orders by an experiment's creation or last update time in whole
-- milliseconds (floor of the epoch's, so that experiments created within one
-- millisecond tie and their ids order them), then by id. No index served that order:
-- every page sorted all of a project's experiments (60 ms a page at 200,000 of them,
-- paging through them all quadratic). These indexes hold exactly that sort key.
--
-- extract(epoch FROM timestamptz) is only STABLE (other fields of a timestamptz depend
-- on the session's time zone), which no index may use; the epoch of the interval since
-- 1970 is the same number (to the microsecond, in any time zone) and IMMUTABLE. The
-- store orders by this very expression (store/experiments.py, _epoch_ms), or the
-- planner would not match it to the index. It overflows an interval only past the year
-- 294,000, and these times are only ever the server's now().
CREATE INDEX experiments_by_creation_time ON experiments (
    project,
    (floor(extract(epoch FROM creation_time - timestamptz '1970-01-01 00:00:00+00') * 1000)::bigint) DESC,
    experiment_id
);
CREATE INDEX experiments_by_last_update_time ON experiments (
    project,
    (floor(extract(epoch FROM last_update_time - timestamptz '1970-01-01 00:00:00+00') * 1000)::bigint) DESC,
    experiment_id
);

-- Which runs used an input (`inputs.uri = '...'`, the client's get_runs_using) read
-- every input of every run searched: the inputs' primary key begins with the run. A
-- search now finds the runs holding a rare URI from this index (store/search.py,
-- _rarest_value), without reading the runs' rows (the run id is in the entry). A URI is
-- at most 2,048 bytes (validation.MAX_URI_LENGTH), so the whole of it and a run id fit
-- an index entry (at most 2,704 bytes): unlike params' values it needs no prefix, and
-- URIs that share their first hundreds of characters stay apart.
CREATE INDEX run_inputs_by_uri ON run_inputs (uri, run_id);
