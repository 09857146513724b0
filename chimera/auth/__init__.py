"""Authentication and authorization: signed tokens, the caller they name, and the gRPC gate."""
