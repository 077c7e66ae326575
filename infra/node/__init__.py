"""The node: claims command partitions, rebuilds their aggregates from the log, handles commands
and commits their events (`node`); crash points for the fault tests (`faults`); `stratos node`
(`cli`). See docs/log.md."""
