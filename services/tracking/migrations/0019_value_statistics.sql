-- How often each common key holds each common value, which ANALYZE now learns beside
-- each column's own statistics. A filter's term on a param or tag compares the key and
-- the value's indexed prefix (left(value, 200), migration 0009); without these,
-- PostgreSQL took the two for independent and expected a tag value that one run in
-- four holds, out of four values of one key in five, to be held by one in twenty.
CREATE STATISTICS params_key_value (mcv) ON key, left(value, 200) FROM params;
CREATE STATISTICS tags_key_value (mcv) ON key, left(value, 200) FROM tags;
