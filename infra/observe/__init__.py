"""The platform's own services: the log lines of instances and parts (their shipper
`line_shipper`, their read side `line_store`), metering (`usage`: the fold of actors/metering.py
kept current, the `stratos.usage` export, OTLP), and platform status (`heartbeat` in every part,
`status` reading heartbeats and group lag); `cli` has `stratos logs`, `usage`, `status` and
`usage-export`."""
