-- When the upload that wrote an object's bytes began (the earlier of the two, for a
-- presigned upload copied into another). A garbage collection's drain (purge.py)
-- removes the objects under a discarded location whose upload began no later than
-- the location was let go of: those are the old owner's, even when they published
-- after, where update_time (the publication's time) would take them for a reuse's.
-- Empty for the objects published before this column: their update_time stands in.
ALTER TABLE objects ADD COLUMN upload_begin_time timestamptz;

-- A server of the version before (during a rolling update, or after a rollback)
-- replaces an object's bytes without a word of this column: the time of the upload
-- it replaced would stay, and date a reuse's object as the old owner's. New bytes
-- with the time unchanged have it emptied, so their update_time stands in.
CREATE FUNCTION objects_forget_replaced_begin_time() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.storage_key IS DISTINCT FROM OLD.storage_key
       AND NEW.upload_begin_time IS NOT DISTINCT FROM OLD.upload_begin_time THEN
        NEW.upload_begin_time := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER objects_forget_replaced_begin_time BEFORE UPDATE ON objects
    FOR EACH ROW EXECUTE FUNCTION objects_forget_replaced_begin_time();

-- The uploads under a discarded location, which its drain ends or waits for.
CREATE INDEX uploads_by_path ON uploads (project, path);
