"""HTTP endpoints. Each turns a request into calls on the registry and its backends,
using `gateway.openai` for the wire format."""
