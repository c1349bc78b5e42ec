"""heed's runtime: loads exported model directories and serves them with ONNX Runtime.

Never imports torch or `export`; the serving install does not have them.
"""
