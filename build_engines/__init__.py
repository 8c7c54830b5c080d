"""TensorRT-LLM engines for the GPU path: checkpoint conversion, `trtllm-build`, GPU model configuration."""
