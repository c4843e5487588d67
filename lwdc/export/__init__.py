"""Deployment: ONNX and portable C from any plain PyTorch CNN (an lwdc-derived one or not).

Nothing here imports the search (space, gate, train): export takes plain models or saved ``torch.export``
programs."""
from .c import CExport, CompilerError, ExportError, UnsupportedLayerError, export_c
from .onnx import OnnxExportError, export_onnx

__all__ = ["export_c", "export_onnx", "CExport", "ExportError", "OnnxExportError", "UnsupportedLayerError",
           "CompilerError"]
