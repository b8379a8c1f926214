"""Benchmarks: Modelyard side by side with MLflow. Run ``python -m benchmarks.run``."""
