"""Forgetting a user: the suppression list every door checks, erasure from every copy, the proof."""
