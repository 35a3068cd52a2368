"""Generated from protos/ by tools/genprotos.py (make protos). Do not edit."""
