"""The HTTP edge both front doors share (GraphQL at /graphql, REST at /v1): the transport rules applied
before any handler runs, written once so a limit changed here changes both APIs.

- `gate.py`: the token first (no body byte is read for an anonymous client), then the body within its
  bounds; one `RequestGate` per process, so the large-body slots are shared by both front doors.
- `request_body.py`: bounded body reading (bytes per request, large bodies read at once, time).
- `json_body.py`: untrusted JSON decoded with a bound on nesting.
"""
