"""Stored speakers: the `/v1/speakers` API (`api`) and the table behind it (`store`)."""
