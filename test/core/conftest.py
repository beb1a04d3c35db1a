"""Shared fixtures for the detector tests: one detector per module (models load once)."""
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def detector_factory():
    from zsg_iad_ros.core.detector import Detector, DetectorConfig

    def make(**kw):
        kw.setdefault("device", "cpu")
        return Detector(DetectorConfig(**kw))
    return make
