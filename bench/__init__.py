"""Benchmarks: the onboarding daemon against the task queues a user would pick instead."""
