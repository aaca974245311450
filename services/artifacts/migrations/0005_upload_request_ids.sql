-- The request id of the CreatePresignedUrl call that began an upload: a repeat of that
-- call gets the same upload, with a URL signed anew (URLs are never stored).
ALTER TABLE uploads ADD COLUMN request_id text;
CREATE UNIQUE INDEX uploads_request_id ON uploads (project, request_id);
