"""About: what each mode means, from the lecture notes (and each mode's own docstring)."""

import streamlit as st

from dashboard.about_text import INTRO, MODES, OUTRO, PLAYGROUND

st.title("About Liveprop")
st.markdown(INTRO)
for title, lecture, doc in MODES:
    st.subheader(title)
    st.markdown(doc)
    st.code(lecture, language="python")
st.markdown(OUTRO)
st.markdown(PLAYGROUND)
