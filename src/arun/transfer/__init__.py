"""Moving images between registries and the daemon's stores: pull (pipelined download and
unpack), push, progress, and ``LocalTransfer`` — the one pull/push path of the daemon."""
