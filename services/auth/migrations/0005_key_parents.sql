-- The key that created a key, when one did: the caller's key of its CreateApiKey (a key
-- made by `cairn keys create`, with authentication off, or before this column has none).
-- Revoking a key revokes every key created with it, transitively, in one transaction:
-- a stolen key leaves no successor behind once it is revoked.
ALTER TABLE api_keys ADD COLUMN parent_prefix text REFERENCES api_keys (prefix);
CREATE INDEX api_keys_by_parent ON api_keys (parent_prefix) WHERE parent_prefix IS NOT NULL;
