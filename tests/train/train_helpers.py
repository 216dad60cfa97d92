"""Shared by the training tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

from typing import Any

from xemo.settings import Settings

STEPS = 30  # seeded optimiser steps per stage on the toy set


def with_train(settings: Settings, **train: Any) -> Settings:
    return settings.model_copy(update={"train": settings.train.model_copy(update=train)})
