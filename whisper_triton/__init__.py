"""Whisper on Triton: the pure pipeline shared by the Triton models, the frontend and the tools."""
