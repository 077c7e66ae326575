"""The platform on one machine: the wiring of `stratos up` (`up`), its supervised child processes
(`supervisor`) and the environment each child gets (`child_env`); `stratos up` (`cli`)."""
