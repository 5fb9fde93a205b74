"""The Docker files, checked without a Docker engine: test_static.py reads them,
test_runtime.py runs the containers' commands here against an embedded PostgreSQL."""
