"""The GLUE files fishtune ships (data/glue in a checkout; package data `fishtune.glue` in the wheel)."""
