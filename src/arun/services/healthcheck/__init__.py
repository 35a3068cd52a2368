"""grpc.health.v1.Health, as containerd's ``healthcheck`` plugin serves it (grpclib's implementation)."""
