"""Hypothesis strategies of text for tests that count bytes on the wire."""

from hypothesis import strategies as st

# Letters of one, two, three and four bytes in UTF-8, long enough that a miscount of
# their bytes outweighs the framing.
text = st.lists(
    st.tuples(st.sampled_from("a\u00e9\u20ac\U0001f600"), st.integers(0, 200)), max_size=4
).map(lambda runs: "".join(letter * count for letter, count in runs))
