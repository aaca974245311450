-- The objects the artifact service has published. A blob in the backend without a row
-- here is invisible (an upload that never completed, or was cut off).
CREATE TABLE objects (
    project text NOT NULL,
    -- "C" collation: byte order, so prefix scans and keyset paging use the index.
    path text COLLATE "C" NOT NULL,
    size bigint NOT NULL,
    sha256 text NOT NULL,
    content_type text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (project, path)
);
