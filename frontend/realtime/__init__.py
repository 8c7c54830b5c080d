"""OpenAI's Realtime transcription API over WebSocket, served by the live Triton model."""
