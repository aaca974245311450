-- What each upload published under its request id (Upload, the byte endpoint's PUT of
-- CreateUploadTicket's ticket, ConfirmUpload, CompleteUploadTicket): a repeat of it
-- (its answer was lost) is answered with this object even after the object at its path
-- was replaced or removed, and is never published again. The id on the object's row
-- (0004) told a repeat only while nothing replaced the object.
-- Written in the publishing transaction, with a row of requests under the method
-- 'publication' (no RPC's name: those begin with '/'), which keeps it for
-- CAIRN_REQUEST_ID_RETENTION_SECONDS like any request id: the interceptor's pruning of
-- requests removes it by the cascade. One per request id, whatever the project, as
-- the interceptor's ids are: the same id from another project is REQUEST_ID_REUSED.
CREATE TABLE publications (
    method text NOT NULL DEFAULT 'publication' CHECK (method = 'publication'),
    request_id text NOT NULL,
    project text NOT NULL,
    path text COLLATE "C" NOT NULL,
    size bigint NOT NULL,
    sha256 text NOT NULL,
    content_type text NOT NULL,
    storage_key text NOT NULL,
    create_time timestamptz NOT NULL,
    update_time timestamptz NOT NULL,
    PRIMARY KEY (method, request_id),
    FOREIGN KEY (method, request_id) REFERENCES requests ON DELETE CASCADE
);
