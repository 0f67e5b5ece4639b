"""What is made from a run or a config beside training: the model's graph, the ONNX export."""
