"""Offline compilation of the XEmoGPT neural front ends to ONNX / TensorRT, with parity checks and a manifest.

Nothing here runs at serve time: the server loads the artefacts through engines/runtime/.
"""
