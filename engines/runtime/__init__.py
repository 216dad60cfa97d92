"""Runtimes for the XEmoGPT neural front ends: PyTorch, ONNX Runtime or TensorRT, chosen by settings.export."""
