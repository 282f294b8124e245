"""The client's upload after training, as configured steps: DP clipping before encoding (and
before fixed point under secure aggregation, with the rounding headroom), the codec with its
per-client state, byte counts of real payloads through the server's round."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.client.runtime import ClientRuntime
from fedops.client.uplink import Uplink
from fedops.compress.context import codec_context
from fedops.config import parse_config
from fedops.round.transport import PlainTransport
from fedops.secagg import dequantize_sum
from fedops.secagg.encode import quantisation_headroom
from fedops.server.server import Server
from fedops.types import ClientUpdate

DP = {"privacy": {"mode": "central", "noise_multiplier": 1.0, "clip_norm": 1.0},
      "server": {"fraction": 1.0, "selector": "poisson"}}


def _runtime(model=None, image=8, n=60, clients=3, classes=4, **sections):
    cfg = parse_config({
        "data": {"name": "synthetic", "num_train": n, "num_test": 20, "num_classes": classes, "image_size": image},
        "partition": {"num_clients": clients}, "model": model or {"name": "small_cnn", "channels": [2, 4], "hidden": 8},
        "server": {"fraction": 1.0}, **sections,
    })
    g = torch.Generator().manual_seed(0)
    per = n // clients
    return ClientRuntime(
        config=cfg, x_train=torch.randn(n, 1, image, image, generator=g),
        y_train=torch.randint(0, classes, (n,), generator=g),
        partition_indices=[np.arange(i * per, (i + 1) * per) for i in range(clients)], client_meta=[],
        input_shape=(1, image, image), num_classes=classes, devices=[torch.device("cpu")],
    )


def _update(rt, cid, scale, seed=0, n=20):
    g = torch.Generator().manual_seed(seed)
    return ClientUpdate(client_id=cid, delta=torch.randn(rt.layout.size, generator=g) * scale, num_samples=n)


def _ctx(rt, cid, round_idx=1):
    return codec_context(seed=rt.config.seed, layout=rt.layout, round_idx=round_idx, client_id=cid)


def _send(rt, update, *, clip_norm=None, state=None, round_idx=1):
    uplink = Uplink.from_config(rt.config, max_samples=max(rt.sizes()))
    return uplink.send(update, ctx=_ctx(rt, update.client_id, round_idx), clip_norm=clip_norm, codec_state=state)


def _decode(rt, out, round_idx=1):
    return rt.config.transport.codec.decode(out.payload, ctx=_ctx(rt, out.client_id, round_idx))


def test_the_steps_follow_the_config():
    names = lambda **s: Uplink.from_config(parse_config(s), max_samples=10).names  # noqa: E731
    assert names() == ["encode"]
    assert names(**DP) == ["dp_clip", "encode"]
    assert names(secagg={"enabled": True}) == ["project", "fixed_point"]
    assert names(secagg={"enabled": True}, **DP) == ["project", "dp_clip", "fixed_point"]


def test_dp_clips_on_the_client_before_encoding_and_reports_the_bit():
    rt = _runtime(**DP)
    big = _update(rt, 0, 1.0)  # norm ~ sqrt(d) >> 1
    out = _send(rt, big, clip_norm=1.0)
    sent = _decode(rt, out)
    assert float(sent.norm()) == pytest.approx(1.0, rel=1e-6)
    assert torch.allclose(sent / sent.norm(), big.delta / big.delta.norm(), atol=1e-6)
    assert out.clip_indicator == 0 and out.report["dp_clipped"] == 1.0
    assert out.nbytes == len(out.payload) + 1 == 4 * rt.layout.size + 1  # float32 + the one-byte bit
    small = _update(rt, 1, 1e-4)
    out = _send(rt, small, clip_norm=1.0)
    assert torch.equal(_decode(rt, out), small.delta) and out.clip_indicator == 1


def test_dp_without_the_servers_clip_norm_is_refused():
    rt = _runtime(**DP)
    with pytest.raises(ValueError, match="clip norm"):
        _send(rt, _update(rt, 0, 1.0))


def test_no_dp_sends_the_update_and_no_bit():
    rt = _runtime()
    u = _update(rt, 2, 3.0)
    out = _send(rt, u)
    assert out.clip_indicator is None and out.nbytes == 4 * rt.layout.size
    assert torch.equal(_decode(rt, out), u.delta)


@settings(max_examples=60, deadline=None)
@given(scale=st.floats(1e-5, 10.0), c=st.floats(0.05, 3.0), seed=st.integers(0, 2**16),
       qscale=st.sampled_from([2.0**12, 2.0**16, 2.0**20]), bits=st.sampled_from([32, 64]))
def test_secagg_dp_upload_has_norm_at_most_c_after_quantisation(scale, c, seed, qscale, bits):
    rt = _runtime(secagg={"enabled": True, "scale": qscale, "bits": bits, "clip": 1.0}, **{
        **DP, "privacy": {**DP["privacy"], "adaptive_clipping": True, "clip_count_stddev": 5.0}})
    u = _update(rt, 0, scale, seed=seed)
    if c <= quantisation_headroom(dim=rt.layout.size, scale=qscale):
        with pytest.raises(ValueError, match="headroom"):
            _send(rt, u, clip_norm=c)
        return
    out = _send(rt, u, clip_norm=c)
    v = dequantize_sum(out.payload, n=1, scale=qscale, bits=bits)
    assert np.linalg.norm(v[:-1]) <= c * (1 + 1e-12)  # what is actually summed has sensitivity C
    within = float(u.delta.double().norm()) <= c
    assert out.report["dp_clipped"] == float(not within)
    assert v[-1] == pytest.approx(1.0 if within else 0.0, abs=0.5 / qscale)  # the bit, as 1 * clip
    assert out.nbytes == (rt.layout.size + 1) * bits // 8


def test_error_feedback_state_goes_out_and_comes_back():
    rt = _runtime(transport={"codec": {"name": "topk", "k": 1, "error_feedback": True, "value_bits": 32}})
    d = rt.layout.size
    first = torch.zeros(d)
    first[:2] = torch.tensor([3.0, 2.0])
    out1 = _send(rt, ClientUpdate(client_id=0, delta=first, num_samples=20))
    assert out1.codec_state[1] == 2.0 and _decode(rt, out1)[0] == 3.0  # sent 3.0, holds the 2.0
    out2 = _send(rt, ClientUpdate(client_id=0, delta=torch.zeros(d), num_samples=20), state=out1.codec_state,
                 round_idx=2)
    assert _decode(rt, out2, round_idx=2)[1] == 2.0  # its residual goes out though its new update is zero


def _server_round(rt, deltas, round_idx=1):
    server = Server(rt.config, params=torch.zeros(rt.layout.size), num_clients=len(deltas), layout=rt.layout)
    outs = [_send(rt, ClientUpdate(client_id=c, delta=d, num_samples=20), round_idx=round_idx)
            for c, d in enumerate(deltas)]
    plan = server.plan(round_idx, selected=list(range(len(deltas))))
    rows = server.rows(plan, {})
    metrics = server.finish(plan, PlainTransport().deliver(round_idx, [o.message() for o in outs]), rows)
    return server, outs, metrics, rows


def test_rpn_on_the_mnist_cnn_sends_exactly_1183242_floats():
    rt = _runtime(model={"name": "mnist_cnn"}, image=28, n=40, clients=2, classes=10, transport={"codec": "rpn"})
    assert rt.layout.size == 1_199_882
    g = torch.Generator().manual_seed(0)
    _, outs, m, rows = _server_round(rt, [torch.randn(rt.layout.size, generator=g) * 1e-3 for _ in range(2)])
    per_update = 12 + 4 * 1_183_242  # header + the pooled residual as float32
    assert [o.nbytes for o in outs] == [per_update, per_update] == [len(o.payload) for o in outs]
    assert m["comm/bytes_up"] == 2 * per_update
    assert m["comm/bytes_down"] == 2 * per_update  # the pooled aggregate goes back
    assert m["comm/compression_ratio"] == 4 * 1_199_882 / per_update
    assert rows[0]["bytes_up"] == rows[1]["bytes_down"] == per_update


def test_rpn_with_unpooled_filters_counts_its_payload_and_a_float32_download():
    rt = _runtime(model={"name": "mnist_cnn"}, image=28, n=40, clients=2, classes=10,
                  transport={"codec": {"name": "rpn", "unpooled_filters": 0.25}})
    g = torch.Generator().manual_seed(1)
    server, outs, m, _ = _server_round(rt, [torch.randn(rt.layout.size, generator=g) * 1e-3 for _ in range(2)])
    per_update = 16 + 12 + 4 * (1_183_242 + 8 * (8 + 16 * 32))  # header, 96-filter bitmap, values
    assert [o.nbytes for o in outs] == [per_update, per_update] == [len(o.payload) for o in outs]
    assert m["comm/bytes_up"] == 2 * per_update
    assert m["comm/bytes_down"] == 2 * server.download_nbytes == 2 * 4 * 1_199_882


def test_a_garbled_payload_is_rejected_with_the_reason():
    from dataclasses import replace

    rt = _runtime(transport={"codec": {"name": "qsgd", "bits": 8}}, clients=2, n=40)
    server = Server(rt.config, params=torch.zeros(rt.layout.size), num_clients=2, layout=rt.layout)
    good = _send(rt, ClientUpdate(client_id=0, delta=torch.ones(rt.layout.size), num_samples=20)).message()
    bad = _send(rt, ClientUpdate(client_id=1, delta=torch.ones(rt.layout.size), num_samples=20)).message()
    bad = replace(bad, payload=bad.payload[:-3])
    plan = server.plan(1, selected=[0, 1])
    rows = server.rows(plan, {})
    m = server.finish(plan, PlainTransport().deliver(1, [good, bad]), rows)
    assert rows[1]["status"] == "rejected" and "undecodable qsgd payload" in rows[1]["reason"]
    assert rows[0]["status"] == "ok" and m["clients/rejected"] == 1
