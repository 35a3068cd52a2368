"""The daemon's listeners: gRPC (grpclib) and ttrpc on unix sockets, and their request middleware."""
