from arun.client import Client as Client
from arun.embedded import Runtime as Runtime

__version__: str
__all__ = ["Client", "Runtime", "__version__"]
