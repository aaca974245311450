-- A version's or artifact's source run id, when it is one of Cairn's (32 hexadecimal
-- digits), in lower case: the case the tracking service answers run ids in, and the
-- one the registry now stores (validation.source_run_id). A filter run_id = '<id>'
-- compares exactly, and found no version registered with its run id in capitals.
-- Another system's run id stays as given. No index holds the column; the rows
-- rewritten are those in capitals only.
UPDATE model_versions SET source_run_id = lower(source_run_id)
    WHERE source_run_id ~ '^[0-9a-fA-F]{32}$' AND source_run_id <> lower(source_run_id);
UPDATE artifacts SET source_run_id = lower(source_run_id)
    WHERE source_run_id ~ '^[0-9a-fA-F]{32}$' AND source_run_id <> lower(source_run_id);
