"""HTTP handlers: parse and validate the request, call the service, write JSON."""
