"""The pipeline services, one module each (see `tradeos_lab.pipeline.registry`)."""
