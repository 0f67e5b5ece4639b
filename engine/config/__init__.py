"""Every knob of a run: RunConfig and its field metadata (fields.py), and the checks that judge a config."""
