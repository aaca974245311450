-- A user's keys in the order GetApiKeys pages them, so that a page reads about its own
-- rows however many revoked keys the user has gathered (they are kept); it also serves
-- what the index on user_id alone did. And the unrevoked keys by user, which
-- CreateApiKey counts against the bound on a user's live keys.
CREATE INDEX api_keys_by_user_in_order ON api_keys (user_id, create_time, prefix);
DROP INDEX api_keys_by_user;
CREATE INDEX api_keys_unrevoked_by_user ON api_keys (user_id) WHERE revoke_time IS NULL;
