-- What a list page reads of each object, counted once when it is written rather than on
-- every page: its custom properties and tags as text (store/common.py, Listing.page).
-- Other columns are short and bounded. Adding the columns rewrites the tables.
ALTER TABLE registered_models ADD COLUMN text_bytes integer
    GENERATED ALWAYS AS (octet_length(custom_properties::text) + octet_length(tags::text)) STORED;
ALTER TABLE model_versions ADD COLUMN text_bytes integer
    GENERATED ALWAYS AS (octet_length(custom_properties::text) + octet_length(tags::text)) STORED;
ALTER TABLE artifacts ADD COLUMN text_bytes integer
    GENERATED ALWAYS AS (octet_length(custom_properties::text)) STORED;
