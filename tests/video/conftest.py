"""Fixtures for the video tests. The clips themselves (``clip_dir``, made by
scripts/make-clips.sh as the image build does) are a fixture of tests/conftest.py, shared with
the proxy, central and fleet tests that play real video."""
