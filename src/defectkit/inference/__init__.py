"""Loading saved models and inspecting images (torch or onnxruntime); no training code here."""
