"""Files: arrays (.npz without pickle, written atomically, checked before loading) and ONNX."""
