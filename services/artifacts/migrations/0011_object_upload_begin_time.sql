-- When the upload that wrote an object's bytes began (the earlier of the two, for a
-- presigned upload copied into another). A garbage collection's drain (purge.py)
-- removes the objects under a discarded location whose upload began no later than
-- the location was let go of: those are the old owner's, even when they published
-- after, where update_time (the publication's time) would take them for a reuse's.
-- Empty for the objects published before this column: their update_time stands in.
ALTER TABLE objects ADD COLUMN upload_begin_time timestamptz;
