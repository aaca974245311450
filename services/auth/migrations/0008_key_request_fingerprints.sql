-- What the CreateApiKey call that made a key asked (its request and caller, hashed as
-- every recorded write's are): a call under the same request id asking anything else
-- is another request, refused as REQUEST_ID_REUSED, not a repeat that revokes the key.
-- NULL for keys made before: a call repeating their request id is taken for a repeat.
ALTER TABLE api_keys ADD COLUMN request_fingerprint bytea;
