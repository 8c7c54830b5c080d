"""Tasks: transcriptions queued in the database and run by the task runner, whatever API asked for them."""
