"""hello_es: a small HTTP service deployed with es."""

from hello_es.settings import VERSION as __version__

__all__ = ["__version__"]
