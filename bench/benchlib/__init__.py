"""Helpers for bench/run.py: process accounting, SIPp driving, proxies under test, modes."""
