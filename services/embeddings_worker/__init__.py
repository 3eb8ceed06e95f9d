"""The embeddings worker: serves /v1/embeddings jobs with the built-in all-MiniLM-L6-v2 model (int8 ONNX)."""
