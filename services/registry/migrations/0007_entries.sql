-- How many entries (custom properties and tags) a list page reads of each object,
-- counted once when it is written, as its text_bytes: a page is bounded by both
-- (store/common.py, Listing.page). Counting them on every page would read each listed
-- object's properties and tags, its latest versions' too, where the bytes read no more
-- than a column of the row. Adding the columns rewrites the tables.
CREATE FUNCTION key_count(object jsonb) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT count(*)::integer FROM jsonb_object_keys(object) $$;
ALTER TABLE registered_models ADD COLUMN entries integer
    GENERATED ALWAYS AS (key_count(custom_properties) + key_count(tags)) STORED;
ALTER TABLE model_versions ADD COLUMN entries integer
    GENERATED ALWAYS AS (key_count(custom_properties) + key_count(tags)) STORED;
ALTER TABLE artifacts ADD COLUMN entries integer
    GENERATED ALWAYS AS (key_count(custom_properties)) STORED;
