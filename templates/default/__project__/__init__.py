"""{{ project }}: a small HTTP service deployed with es."""

from {{ project }}.settings import VERSION as __version__

__all__ = ["__version__"]
