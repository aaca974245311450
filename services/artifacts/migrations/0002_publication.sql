-- The publication protocol: bytes live under a storage key no other upload can write,
-- and a row here is the only thing that makes them visible at a path.

-- Keys are relative to the backend's root (the directory, or the bucket and prefix).
-- Objects stored before this migration keep the key they were written under,
-- "<project>/<path>"; new uploads get "_objects/<project>/<xx>/<uuid>".
ALTER TABLE objects ADD COLUMN storage_key text COLLATE "C";
UPDATE objects SET storage_key = project || '/' || path;
ALTER TABLE objects ALTER COLUMN storage_key SET NOT NULL;
CREATE UNIQUE INDEX objects_storage_key ON objects (storage_key);

-- Uploads in progress: the key is recorded (and committed) before any byte is written,
-- so bytes of an upload that never publishes are always found again. A streamed
-- upload's row lives from its header to its publication; a presigned PUT's from the
-- URL's creation to ConfirmUpload. The janitor expires rows older than its threshold
-- (counted from the URL's expiry for presigned PUTs) and collects their bytes.
CREATE TABLE uploads (
    upload_id uuid PRIMARY KEY,
    storage_key text COLLATE "C" NOT NULL UNIQUE,
    project text NOT NULL,
    path text COLLATE "C" NOT NULL,
    overwrite boolean NOT NULL,
    -- Empty when the upload names none (a streamed upload names it at publication).
    content_type text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Presigned PUTs only: when the URL stops working.
    url_expire_time timestamptz
);

-- Keys whose bytes are no longer referenced: replaced by an overwrite, deleted, or left
-- by an upload that failed or expired. Inserted in the transaction that unreferenced
-- them; the bytes are removed after that commit, then the row.
CREATE TABLE garbage (
    storage_key text COLLATE "C" PRIMARY KEY,
    since timestamptz NOT NULL DEFAULT clock_timestamp()
);
