"""The cartridge agent of one instance (`agent`): checks out the artifacts, reports the member's
status and health, ships its log lines; `stratos agent` (`cli`)."""
