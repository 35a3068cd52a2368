"""containerd.services.streaming.v1.Streaming: client-opened streams that transfers use."""
