"""The client's upload: DP clipping before encoding, codec state per client, secure-aggregation
projection — through ClientRuntime.encode with hand-made updates."""

import numpy as np
import pytest
import torch

from fedops.client.runtime import ClientRuntime
from fedops.config import parse_config
from fedops.types import ClientUpdate


def _runtime(**sections):
    cfg = parse_config({
        "data": {"name": "synthetic", "num_train": 60, "num_test": 20, "num_classes": 4, "image_size": 8},
        "partition": {"num_clients": 3}, "model": {"name": "small_cnn", "channels": [2, 4], "hidden": 8},
        "server": {"fraction": 1.0}, **sections,
    })
    g = torch.Generator().manual_seed(0)
    return ClientRuntime(
        config=cfg, x_train=torch.randn(60, 1, 8, 8, generator=g), y_train=torch.randint(0, 4, (60,), generator=g),
        partition_indices=[np.arange(i * 20, (i + 1) * 20) for i in range(3)], client_meta=[],
        input_shape=(1, 8, 8), num_classes=4, devices=[torch.device("cpu")],
    )


def _update(rt, cid, scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ClientUpdate(client_id=cid, delta=torch.randn(rt.layout.size, generator=g) * scale, num_samples=20)


def _decode(rt, msg, round_idx=1):
    from fedops.compress.context import codec_context

    ctx = codec_context(seed=rt.config.seed, layout=rt.layout, round_idx=round_idx, client_id=msg.client_id)
    return rt.config.transport.codec.decode(msg.payload, ctx=ctx)


DP = {"privacy": {"mode": "central", "noise_multiplier": 1.0, "clip_norm": 1.0}, "server": {"fraction": 1.0, "selector": "poisson"}}


def test_dp_clips_on_the_client_before_encoding_and_reports_the_bit():
    rt = _runtime(**DP)
    big = _update(rt, 0, 1.0)  # norm ~ sqrt(d) >> 1
    msg, report = rt.encode(big, round_idx=1, dp_clip_norm=1.0)
    sent = _decode(rt, msg)
    assert float(sent.norm()) == pytest.approx(1.0, rel=1e-6)
    assert torch.allclose(sent / sent.norm(), big.delta / big.delta.norm(), atol=1e-6)
    assert msg.clip_indicator == 0 and report["dp_clipped"] == 1.0
    assert msg.nbytes == len(msg.payload) + 1 == 4 * rt.layout.size + 1  # float32 + the one-byte bit
    small = _update(rt, 1, 1e-4)
    msg, report = rt.encode(small, round_idx=1, dp_clip_norm=1.0)
    assert torch.equal(_decode(rt, msg), small.delta) and msg.clip_indicator == 1


def test_dp_without_the_servers_clip_norm_is_refused():
    rt = _runtime(**DP)
    with pytest.raises(ValueError, match="clip norm"):
        rt.encode(_update(rt, 0, 1.0), round_idx=1)


def test_no_dp_sends_the_update_and_no_bit():
    rt = _runtime()
    u = _update(rt, 2, 3.0)
    msg, _ = rt.encode(u, round_idx=1)
    assert msg.clip_indicator is None and msg.nbytes == 4 * rt.layout.size
    assert torch.equal(_decode(rt, msg), u.delta)
