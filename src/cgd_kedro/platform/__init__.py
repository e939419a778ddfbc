"""The web platform over the Kedro project: explore, compare, run, submit (``kedro platform``)."""
