"""Byte accounting of real payloads through the client runtime and the server's round."""

import numpy as np
import torch

from fedops.client.runtime import ClientRuntime
from fedops.config import parse_config
from fedops.server.engine import FederatedServer
from fedops.types import ClientUpdate


def _runtime(codec, model=None, image=8):
    cfg = parse_config({
        "data": {"name": "synthetic", "num_train": 40, "num_test": 20, "num_classes": 10, "image_size": image},
        "partition": {"num_clients": 2}, "server": {"fraction": 1.0},
        "model": model or {"name": "small_cnn", "channels": [2, 4], "hidden": 8},
        "transport": {"codec": codec},
    })
    return ClientRuntime(
        config=cfg, x_train=torch.zeros(40, 1, image, image), y_train=torch.zeros(40, dtype=torch.long),
        partition_indices=[np.arange(0, 20), np.arange(20, 40)], client_meta=[],
        input_shape=(1, image, image), num_classes=10, devices=[torch.device("cpu")],
    )


def _round(rt, r, deltas):
    server = FederatedServer(config=rt.config, params=torch.zeros(rt.layout.size), num_clients=2, layout=rt.layout)
    msgs = [rt.encode(ClientUpdate(client_id=c, delta=d, num_samples=20), round_idx=r)[0] for c, d in enumerate(deltas)]
    return server, msgs, server.finish_round(r, selected=[0, 1], received=msgs, reports={}, dropped={}, started=0.0)


def test_rpn_on_the_mnist_cnn_sends_exactly_1183242_floats():
    rt = _runtime("rpn", model={"name": "mnist_cnn"}, image=28)
    assert rt.layout.size == 1_199_882
    g = torch.Generator().manual_seed(0)
    _, msgs, out = _round(rt, 1, [torch.randn(rt.layout.size, generator=g) * 1e-3 for _ in range(2)])
    per_update = 12 + 4 * 1_183_242  # header + the pooled residual as float32
    assert [m.nbytes for m in msgs] == [per_update, per_update] == [len(m.payload) for m in msgs]
    assert out.metrics["comm/bytes_up"] == 2 * per_update
    assert out.metrics["comm/bytes_down"] == 2 * per_update  # the pooled aggregate goes back
    assert out.metrics["comm/compression_ratio"] == 4 * 1_199_882 / per_update
    rows = {r["client_id"]: r for r in out.client_table}
    assert rows[0]["bytes_up"] == rows[1]["bytes_down"] == per_update


def test_rpn_with_unpooled_filters_counts_its_payload_and_a_float32_download():
    rt = _runtime({"name": "rpn", "unpooled_filters": 0.25}, model={"name": "mnist_cnn"}, image=28)
    g = torch.Generator().manual_seed(1)
    server, msgs, out = _round(rt, 1, [torch.randn(rt.layout.size, generator=g) * 1e-3 for _ in range(2)])
    per_update = 16 + 12 + 4 * (1_183_242 + 8 * (8 + 16 * 32))  # header, 96-filter bitmap, values
    assert [m.nbytes for m in msgs] == [per_update, per_update] == [len(m.payload) for m in msgs]
    assert out.metrics["comm/bytes_up"] == 2 * per_update
    assert out.metrics["comm/bytes_down"] == 2 * server.broadcast_bytes() == 2 * 4 * 1_199_882


def test_error_feedback_state_lives_on_the_client_across_rounds():
    rt = _runtime({"name": "topk", "k": 1, "error_feedback": True, "value_bits": 32})
    d = rt.layout.size
    first = torch.zeros(d)
    first[:2] = torch.tensor([3.0, 2.0])
    _, _, out1 = _round(rt, 1, [first, torch.zeros(d)])
    assert rt._codec_state[0][1] == 2.0  # client 0 still holds the 2.0 it did not send
    _, _, out2 = _round(rt, 2, [torch.zeros(d), torch.zeros(d)])
    # round 2: client 0 sends its residual although its new update is zero; client 1 sends nothing
    agg2 = out2.params  # fedavg of [2.0 at index 1] and zeros, server lr 1, from a zero model
    assert agg2[1] == 1.0 and agg2.abs().sum() == 1.0
    assert out1.params[0] == 1.5


def test_a_garbled_payload_is_rejected_with_the_reason():
    rt = _runtime({"name": "qsgd", "bits": 8})
    server = FederatedServer(config=rt.config, params=torch.zeros(rt.layout.size), num_clients=2, layout=rt.layout)
    good, _ = rt.encode(ClientUpdate(client_id=0, delta=torch.ones(rt.layout.size), num_samples=20), round_idx=1)
    bad, _ = rt.encode(ClientUpdate(client_id=1, delta=torch.ones(rt.layout.size), num_samples=20), round_idx=1)
    from dataclasses import replace

    bad = replace(bad, payload=bad.payload[:-3])
    out = server.finish_round(1, selected=[0, 1], received=[good, bad], reports={}, dropped={}, started=0.0)
    rows = {r["client_id"]: r for r in out.client_table}
    assert rows[1]["status"] == "rejected" and "undecodable qsgd payload" in rows[1]["reason"]
    assert rows[0]["status"] == "ok" and out.metrics["clients/rejected"] == 1
