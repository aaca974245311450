-- The request id of the CreateApiKey call that made a key. A repeat of that call (its
-- answer, holding the secret, was lost) revokes the key nobody ever saw and makes a new
-- one: the server never stores a secret, so it cannot send the first one again.
ALTER TABLE api_keys ADD COLUMN request_id text;
CREATE UNIQUE INDEX api_keys_request_id ON api_keys (user_id, request_id);
