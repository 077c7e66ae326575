"""The event log on Apache Kafka: the adapter every part writes and reads through (`kafka`: topics,
envelopes, the appender, dead letters), the events topic read as fenced history (`eventlog`),
partition recovery from checkpoints and claims (`recovery`), the bulk reader (`bulk`), the
archive and its file format (`archive`, `archive_format`), commands sent and their replies
awaited (`commands_client`), dead letters listed and replayed (`deadletters`); `cli` has
`stratos log`, `deadletter` and `schemas`. See docs/log.md and docs/kafka.md."""
