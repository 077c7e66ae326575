"""The reactor: turns events, replies and instance status into follow-up commands (`reactor`);
`stratos reactor` (`cli`)."""
