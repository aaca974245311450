-- The S3 multipart upload of a direct upload (CreateUploadTicket), recorded once it is
-- begun. Only an upload with one is completed by CompleteUploadTicket, and always with
-- this id, never one a client names: an upload through a presigned PUT URL (no
-- multipart id) can never be published without being sealed by ConfirmUpload.
ALTER TABLE uploads ADD COLUMN multipart_id text;
