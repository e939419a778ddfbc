"""``python -m cgd_kedro.platform [--port 8000] [--env ENV]``: the same as ``kedro platform``."""

from cgd_kedro.commands import platform

if __name__ == "__main__":
    platform()
