"""Outbound: when to try which message where (the scheduler, its due queue and target
health), the next hop, the retry policy, and bounces."""
