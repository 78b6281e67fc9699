"""Hypothesis strategies shared by the tests: job ids, valid and hostile."""

from __future__ import annotations

from hypothesis import strategies as st

#: Characters that try to escape a path segment or confuse a URL parser.
TRICKY = ["/", "..", ".", "?", "#", "%", "%2F", "%2e%2e", " ", "\\", ";", "&", "=", "+", "é", "💥"]

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1)

#: Any id heartbeat must accept and send to its own check-in endpoint, verbatim.
job_ids = st.one_of(
    _text,
    st.lists(st.one_of(st.sampled_from(TRICKY), _text), min_size=1, max_size=8).map("".join),
    st.sampled_from([".", "..", "../../_security/user", "a/b?c#d é", "%", "%2F", "_check_in"]),
).filter(lambda s: 0 < len(s.encode("utf-8")) <= 512)
