-- A version's or artifact's source run id, when it is one of Cairn's (32 hexadecimal
-- digits), in lower case: the case the tracking service answers run ids in, and the
-- one the registry now stores (validation.source_run_id). A filter run_id = '<id>'
-- compares exactly, and found no version registered with its run id in capitals.
-- Another system's run id stays as given. No index holds the column; the rows
-- rewritten are those in capitals only.
--
-- A server of the version before (during a rolling update, or after a rollback) still
-- stores the id as given: the trigger lowers what it writes too, or each version it
-- registered with capitals would be missed by run_id for good.
CREATE FUNCTION run_id_in_lower_case() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.source_run_id ~ '^[0-9a-fA-F]{32}$' THEN
        NEW.source_run_id := lower(NEW.source_run_id);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER model_versions_run_id_in_lower_case
    BEFORE INSERT OR UPDATE OF source_run_id ON model_versions
    FOR EACH ROW EXECUTE FUNCTION run_id_in_lower_case();
CREATE TRIGGER artifacts_run_id_in_lower_case
    BEFORE INSERT OR UPDATE OF source_run_id ON artifacts
    FOR EACH ROW EXECUTE FUNCTION run_id_in_lower_case();

UPDATE model_versions SET source_run_id = lower(source_run_id)
    WHERE source_run_id ~ '^[0-9a-fA-F]{32}$' AND source_run_id <> lower(source_run_id);
UPDATE artifacts SET source_run_id = lower(source_run_id)
    WHERE source_run_id ~ '^[0-9a-fA-F]{32}$' AND source_run_id <> lower(source_run_id);
