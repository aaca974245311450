-- The user who sent the CreateApiKey call that made a key, with authentication on (NULL
-- without it, and for keys of servers before this column). Another user's creation
-- under the same request id, for the same user, is not refused: its key is stored under
-- a request id of the sender's own (api_keys.py), as requests' claims are (0011).
ALTER TABLE api_keys ADD COLUMN request_caller text;
