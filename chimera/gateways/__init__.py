"""The two gateways: gRPC (control plane and event streams) and WebSocket (browsers)."""
