"""DP-FedAvg composed with secure aggregation: the clients clip before masking, the server noises
the unmasked sum. Compared with the server-side DP path on the same updates and noise stream."""

import numpy as np
import pytest
import torch

from fedops.config import parse_config
from fedops.secagg import secure_sum
from fedops.secagg.encode import encode_dp, quantisation_headroom
from fedops.server.engine import FederatedServer
from fedops.types import EncodedUpdate

D, N = 50, 20


def _cfg(*, secagg: bool, sigma: float, adaptive: bool = False):
    return parse_config({
        "partition": {"num_clients": N},
        "server": {"fraction": 0.5, "selector": "poisson", "min_clients": 1},
        "privacy": {"mode": "central", "noise_multiplier": sigma, "clip_norm": 0.5, "adaptive_clipping": adaptive,
                    "clip_count_stddev": 2.0},
        "secagg": {"enabled": secagg, "scale": 2.0**20, "clip": 1.0},
    })


def _updates(seed=0, k=9):
    rng = np.random.default_rng(seed)
    return {cid: rng.normal(0, 0.05 + 0.05 * (cid % 4), size=D) for cid in range(k)}


def _plain(cfg, updates):
    server = FederatedServer(config=cfg, params=torch.zeros(D), num_clients=N)
    msgs = [EncodedUpdate(client_id=c, payload=u.astype("<f4").tobytes(), nbytes=4 * D, num_samples=10)
            for c, u in updates.items()]
    out = server.finish_round(1, selected=sorted(updates), received=msgs, reports={}, dropped={}, started=0.0)
    return server, out


def _secure(cfg, updates, drop=None):
    server = FederatedServer(config=cfg, params=torch.zeros(D), num_clients=N)
    c = server.client_dp_clip_norm()
    assert c == 0.5
    sa = cfg.secagg
    inputs = {cid: encode_dp(u, clip_norm=c, send_count=cfg.privacy.adaptive_clipping, clip=sa.clip,
                             scale=sa.scale, bits=sa.bits)[0] for cid, u in updates.items()}
    res = secure_sum(inputs, bits=sa.bits, threshold=4, k=None, seed=1, drop_after=drop)
    out = server.finish_secure_round(1, selected=sorted(updates), result=res, reports={}, dropped={}, started=0.0)
    return server, out, res


@pytest.mark.parametrize("sigma", [0.0, 1.0])
@pytest.mark.parametrize("adaptive", [False, True])
def test_secure_dp_round_matches_server_side_dp(sigma, adaptive):
    updates = _updates()
    s_plain, plain = _plain(_cfg(secagg=False, sigma=sigma, adaptive=adaptive), updates)
    s_sec, secure, _ = _secure(_cfg(secagg=True, sigma=sigma, adaptive=adaptive), updates)
    sa = _cfg(secagg=True, sigma=0).secagg
    k, m = len(updates), 10.0  # expected cohort q*N
    # the client clips to C - h (h: rounding headroom), then rounds: per-coordinate difference of the sums
    bound = (k * 0.5 / sa.scale + k * quantisation_headroom(dim=D, scale=sa.scale)) / m
    assert torch.max(torch.abs(plain.params - secure.params)) <= bound + 1e-7
    assert secure.metrics["privacy/noise_std"] == plain.metrics["privacy/noise_std"]
    assert secure.metrics["privacy/epsilon"] == plain.metrics["privacy/epsilon"]
    assert s_sec.dp.clip_norm == pytest.approx(s_plain.dp.clip_norm)  # adaptive: same noised count
    if adaptive:
        assert s_sec.dp.clip_norm != 0.5
        assert secure.metrics["privacy/fraction_clipped"] == plain.metrics["privacy/fraction_clipped"]
    else:  # the clients sent no count: the server learns nothing beyond the sum
        assert "privacy/fraction_clipped" not in secure.metrics


def test_secure_dp_sums_only_the_survivors():
    updates = _updates(seed=5, k=10)
    dropped = {3, 7}
    _, secure, res = _secure(_cfg(secagg=True, sigma=0.0), updates, drop={"advertise": dropped})
    assert set(res.dropped) == dropped
    _, plain = _plain(_cfg(secagg=False, sigma=0.0), {c: u for c, u in updates.items() if c not in dropped})
    assert torch.allclose(plain.params, secure.params, atol=1e-4)
    rows = {r["client_id"]: r for r in secure.client_table}
    assert all(rows[c]["status"] == "dropped" and rows[c]["reason"].startswith("secure aggregation") for c in dropped)


def test_the_clip_norm_goes_to_the_clients_under_dp_only():
    assert FederatedServer(config=parse_config({}), params=torch.zeros(D), num_clients=N).client_dp_clip_norm() is None
    server = FederatedServer(config=_cfg(secagg=False, sigma=1.0), params=torch.zeros(D), num_clients=N)
    assert server.client_dp_clip_norm() == 0.5
    assert "before encoding" in server.privacy_disclosure()["composition"]
    secure = FederatedServer(config=_cfg(secagg=True, sigma=1.0), params=torch.zeros(D), num_clients=N)
    assert "before masking" in secure.privacy_disclosure()["composition"]


def test_bad_masked_vector_and_bad_share_land_in_the_client_table_as_dropped():
    from fedops.secagg import Tamper

    cfg = _cfg(secagg=True, sigma=0.0)
    sa = cfg.secagg
    updates = _updates(seed=2, k=8)
    server = FederatedServer(config=cfg, params=torch.zeros(D), num_clients=N)
    inputs = {cid: encode_dp(u, clip_norm=0.5, send_count=False, clip=sa.clip, scale=sa.scale, bits=sa.bits)[0]
              for cid, u in updates.items()}
    res = secure_sum(inputs, bits=sa.bits, threshold=4, k=None, seed=1,
                     tamper=Tamper(bad_length=frozenset({2}), corrupt_shares=frozenset({(5, 1)})))
    out = server.finish_secure_round(1, selected=sorted(updates), result=res, reports={}, dropped={}, started=0.0)
    rows = {r["client_id"]: r for r in out.client_table}
    assert rows[2]["status"] == "dropped" and "length" in rows[2]["reason"]
    assert rows[5]["status"] == "dropped" and "share" in rows[5]["reason"]
    assert out.metrics["clients/aggregated"] == 6
    _, plain = _plain(_cfg(secagg=False, sigma=0.0), {c: u for c, u in updates.items() if c not in (2, 5)})
    assert torch.allclose(plain.params, out.params, atol=1e-4)
