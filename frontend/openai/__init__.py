"""OpenAI's API: audio transcriptions and translations, models, chat completions with audio input."""
