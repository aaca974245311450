-- When a garbage collection began removing a deleted run for good (NULL until then).
-- Its history goes in many short transactions, so from then on the run cannot be
-- restored (it would come back with part of it) until a collection ends it.
ALTER TABLE runs ADD COLUMN purge_time timestamptz;

-- A server of the release before restores a run without looking at purge_time: the
-- database refuses it (that server answers INTERNAL, with nothing changed), rather
-- than bring the run back half gone, or let the collection remove it once restored.
CREATE FUNCTION refuse_restoring_a_claimed_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.lifecycle_stage = 2 AND NEW.lifecycle_stage <> 2 THEN  -- 2: deleted
        RAISE EXCEPTION 'run % cannot be restored: a garbage collection has begun removing it',
            OLD.run_id USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER claimed_runs_stay_deleted BEFORE UPDATE OF lifecycle_stage ON runs
    FOR EACH ROW WHEN (OLD.purge_time IS NOT NULL)
    EXECUTE FUNCTION refuse_restoring_a_claimed_run();
