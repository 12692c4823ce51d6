"""Helpers for the tests that are more than a fixture: a headless Chromium (browser)."""
