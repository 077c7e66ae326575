"""Who sent a record and who is calling: record signatures (`signing`), tokens, principals and
the command rule (`access`), the node's check of each command (`gate`), `stratos member-key`
(`cli`). See docs/security.md."""
