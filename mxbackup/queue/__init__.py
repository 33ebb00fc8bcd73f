"""The queue: the spool (commits, recovery), the rounds that alone write and sync its files,
the spool process that runs them, and the envelope format."""
