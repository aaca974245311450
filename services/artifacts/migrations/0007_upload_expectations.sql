-- What an upload of presigned parts announced (CreateUploadTicket's header): its size,
-- and its sha256 when given. Its parts' URLs each take up to S3's 5 GiB, so the
-- completion is held to these, and the object the store completed is measured
-- against them before it is read back. part_size is that of its parts but the last, as
-- their URLs were made: the completion counts the parts by it.
ALTER TABLE uploads ADD COLUMN expected_size bigint, ADD COLUMN expected_sha256 text,
    ADD COLUMN part_size bigint;
