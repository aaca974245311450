-- Every key below a revoked key is revoked: a revocation revokes a key's whole tree in
-- one transaction, and no key is created under a revoked one, so a revocation's walk
-- stops at revoked keys (store.py). A key made by an earlier version may break the rule
-- (a repeated creation once revoked the earlier key alone, leaving the keys made with
-- it usable): it is revoked now, as its ancestor's revocation would have done.
WITH RECURSIVE left_live (prefix) AS (
    SELECT k.prefix FROM api_keys k JOIN api_keys parent ON parent.prefix = k.parent_prefix
    WHERE k.revoke_time IS NULL AND parent.revoke_time IS NOT NULL
    UNION
    SELECT k.prefix FROM api_keys k JOIN left_live l ON k.parent_prefix = l.prefix
    WHERE k.revoke_time IS NULL
)
UPDATE api_keys SET revoke_time = now() WHERE prefix IN (SELECT prefix FROM left_live);
