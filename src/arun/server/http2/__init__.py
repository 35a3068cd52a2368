"""A lean HTTP/2 server connection for grpclib (connection.py) and its HPACK codec (hpack.py)."""
