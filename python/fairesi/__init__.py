"""fairesi: deep-learning EEG/MEG source imaging.

Data flows one way through the package::

    headmodel -> simulate (Jansen-Rit source bank) -> data (paired samples)
              -> models -> train / evaluate / metrics -> export

Import the submodules you need (``fairesi.headmodel``, ``fairesi.simulate``,
``fairesi.data``, ``fairesi.models``, ``fairesi.metrics`` ...); this top-level module
stays light so that ``fairesi --help`` is fast.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fairesi")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
