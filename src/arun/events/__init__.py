"""The events exchange: publish, forward and subscribe (containerd ``core/events/exchange``)."""
