-- The key this service seals its page tokens with (common/page_seals.py): random, made
-- once here, and read by every replica, so a token outlives a restart.
CREATE TABLE page_token_key (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    secret bytea NOT NULL CHECK (length(secret) = 32)
);
-- gen_random_uuid draws from PostgreSQL's strong random source: two give 244 bits.
INSERT INTO page_token_key (secret)
    VALUES (sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')));
