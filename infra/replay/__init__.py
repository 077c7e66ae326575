"""Debugging by replay: an aggregate's state at a past point and a digest of all (`inspect_log`),
the platform at a past instant, timelines and what-ifs (`timetravel`), the causation index behind
`stratos why` (`causation_index`); `cli` has `state`, `digest`, `replay`, `history`, `diff`
and `why`. See docs/replay.md."""
