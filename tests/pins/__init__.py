"""Pixel pins: the pinned PNGs and endpoint parameters beside the test that checks them."""
