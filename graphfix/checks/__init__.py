"""Checks that prove a rewrite kept the model's meaning: structural, ONNX Runtime, TensorRT."""
