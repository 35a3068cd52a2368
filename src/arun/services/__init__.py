"""containerd's API services: per service, ``local.py`` (the work, over the stores), ``grpc.py``
(the grpclib servicer: protobuf in and out) and ``plugin.py`` (registrations).

Service plugin ids are containerd's, so configs and ``ctr plugins ls`` read the same.
"""

# ids of the io.containerd.service.v1 plugins that the gRPC plugins look up.
NAMESPACES_SERVICE = "namespaces-service"
INTROSPECTION_SERVICE = "introspection-service"
CONTAINERS_SERVICE = "containers-service"
CONTENT_SERVICE = "content-service"
DIFF_SERVICE = "diff-service"
IMAGES_SERVICE = "images-service"
LEASES_SERVICE = "leases-service"
SNAPSHOTS_SERVICE = "snapshots-service"
