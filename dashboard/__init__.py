"""Liveprop's Streamlit dashboard. Start it with `python -m dashboard` (or `make run`).

app.py        the one entry file: page setup, sidebar, st.navigation
views/        the pages (Train, Runs, Computation graph, About), thin
sidebar.py    the configuration controls; rules.py decides what applies and why not
widgets.py    a RunConfig field's widget, drawn from the field's metadata
state.py      every session-state key and the address (?run=, ?cfg=); the sidebar kept across pages
actions.py    button callbacks, through the engine's public API
refresh.py    when the live panels refresh (st.fragment with run_every), and their timing log
live.py       the live panels: status, controls, divergence banner, loss, overlay
compare.py    the Compare modes panel: the curves, a verdict, any two modes diffed, the other dtype
explain.py    what a learner reads, worked out from the data (verdicts, the banner, layer names)
details.py    the detail panel: weights, gradients, per-layer, health, gradient check, code
pages_common.py  the session's store connection and per-run feeds, plain text, one-shot messages
feed.py       cursors and bounded buffers per run, read through engine.store.db.Store (the one seam)
series.py     histogram buffers; the min-max decimation and EMA are engine/store/decimate.py's (numpy)
figures.py    pure functions from scalar series to plotly figures; histograms.py from histograms;
              axes.py the look they share (legend, log-axis labels)
fonts.py      the CJK font behind the code font (scripts/cjk_font.py installs it in static/fonts/)
serve.py      start/stop the Streamlit server; __main__.py adds the Visdom server
"""
