"""Liveprop's Streamlit dashboard. Start it with `python -m dashboard` (or `make run`).

app.py        the one entry file: page setup, sidebar, st.navigation
views/        the pages (Train, Runs, Computation graph, About), thin
sidebar.py    the configuration controls; rules.py decides what applies and why not
actions.py    button callbacks, through the engine's public API
live.py       the live panels (st.fragment with run_every): status, controls, loss, compare, overlay
details.py    the detail panel: weights, gradients, per-layer, health, gradient check, code
pages_common.py  the session's store connection and per-run feeds, plain text, one-shot messages
feed.py       cursors and bounded buffers per run, read through engine.store.db.Store (the one seam)
series.py     histogram buffers; the min-max decimation and EMA are engine/store/decimate.py's (numpy)
figures.py    pure functions from data to plotly figures
serve.py      start/stop the Streamlit server; __main__.py adds the Visdom server
"""
