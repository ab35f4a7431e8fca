"""Exporting a world model's play setting: ONNX graphs for onnxruntime (`magi export onnx`) and a static
page running them with onnxruntime-web (`magi export web`, `magi serve-web`). docs/export.md, docs/design.md §10."""
