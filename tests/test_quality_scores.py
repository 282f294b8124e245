"""Norm outliers against the round's median, and per-client anomaly scores."""

import pytest
import torch

from fedops.quality import anomaly_scores, default_byzantine, norm_outliers, robust_z


def test_norm_outliers_hand_computed():
    u = torch.tensor([[3.0, 4.0], [0.0, 1.0], [1.0, 0.0], [60.0, 80.0]])  # norms 5, 1, 1, 100
    mask, norms, median = norm_outliers(u, multiple=10)
    assert norms.tolist() == [5.0, 1.0, 1.0, 100.0]
    assert median == 3.0  # mean of the middle two (1, 5)
    assert mask.tolist() == [False, False, False, True]
    with pytest.raises(ValueError, match="multiple must be > 1"):
        norm_outliers(u, multiple=1.0)


def test_anomaly_scores_hand_computed():
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [-2.0, 0.0]])
    agg = u.mean(dim=0)  # [0.25, 0]
    s = anomaly_scores(u, agg, num_byzantine=0)
    # norms 1, 1, 1, 2: median 1, MAD 0, so the scale is 1.2533 x mean |n - 1| = 1.2533 x 0.25
    assert s.norm_z.tolist() == pytest.approx([0.0, 0.0, 0.0, 1 / (1.2533 * 0.25)])
    assert s.cosine.tolist() == pytest.approx([1.0, 1.0, 1.0, -1.0])
    # Krum with f = 0: each row's k - 2 = 2 nearest squared distances
    assert s.krum.tolist() == pytest.approx([0.0, 0.0, 0.0, 18.0])
    assert s.flagged.tolist() == [False, False, False, True]  # negative cosine (and norm z 3.19 > 3)
    assert s.row(3)["flagged"] is True and s.row(0)["krum_score"] == pytest.approx(0.0)


def test_degenerate_cases():
    one = anomaly_scores(torch.ones(1, 3), torch.ones(3))
    assert one.krum is None and one.norm_z.tolist() == [0.0] and one.cosine.tolist() == pytest.approx([1.0])
    zero = anomaly_scores(torch.zeros(3, 2), torch.zeros(2))
    assert zero.cosine.tolist() == [0.0, 0.0, 0.0] and zero.norm_z.tolist() == [0.0, 0.0, 0.0]
    assert [default_byzantine(k) for k in (1, 3, 4, 5, 10)] == [0, 0, 0, 1, 3]


def test_robust_z_hand_computed_and_not_dragged_by_outliers():
    # 1, 2, 3, 4, 100: median 3, |dev| 2, 1, 0, 1, 97 -> MAD 1, scale 1.4826
    z = robust_z(torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert z.tolist() == pytest.approx([-2 / 1.4826, -1 / 1.4826, 0.0, 1 / 1.4826, 97 / 1.4826])
    # two of six scaled tenfold: a plain z-score stays under 1.6, the robust one flags both
    norms = torch.tensor([1.0, 1.1, 0.9, 1.05, 10.0, 11.0])
    plain = (norms - norms.mean()) / norms.std(unbiased=False)
    assert float(plain.max()) < 1.6 and (robust_z(norms)[4:] > 3).all() and (robust_z(norms)[:4].abs() < 3).all()
    assert robust_z(torch.full((4,), 2.0)).tolist() == [0.0] * 4
