"""rollbook: Jupyter runbooks for an Argo Rollouts canary aborted by its analysis gate."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rollbook")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"
