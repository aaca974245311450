-- The lease of the completion (CompleteUploadTicket) that holds an upload of parts:
-- which one (a token it made) and until when. A completion takes it with one UPDATE
-- that succeeds only while no lease is live, renews it while it moves bytes, and
-- clears it at its end; one whose process died leaves it to expire, and the upload is
-- free again. Unlike a lock, it holds no database connection while the object is read
-- back (minutes for a large one), so completions cannot drain the pool.
ALTER TABLE uploads ADD COLUMN completion uuid, ADD COLUMN completing_until timestamptz;
