"""Data attacks: label_flip and the backdoor trigger, poisoning and attack-success rate."""

import pytest
import torch
from torch import nn

from fedops.attacks import ATTACKS, Backdoor, RoundView, apply_trigger, backdoor_accuracy


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_label_flip_all():
    x = torch.randn(10, 3, generator=gen(1))
    y = torch.arange(10)
    x0, y0 = x.clone(), y.clone()
    atk = ATTACKS.build("label_flip")
    assert atk.poisons_data and not atk.needs_benign
    x2, y2 = atk.poison_data(x, y, num_classes=10, generator=gen())
    assert torch.equal(y2, torch.tensor([9, 8, 7, 6, 5, 4, 3, 2, 1, 0]))
    assert torch.equal(x2, x0)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    own = torch.ones(3)  # update unchanged
    v = RoundView(global_params=torch.zeros(3), benign=None, num_selected=4, num_malicious=1)
    assert torch.equal(atk.craft(own, view=v, generator=gen()), own)


@pytest.mark.parametrize("fraction,batch", [(0.3, 20), (0.5, 7), (0.25, 10)])
def test_label_flip_fraction(fraction, batch):
    y = torch.zeros(batch, dtype=torch.long)  # 0 -> 9: every flipped sample changes
    y0 = y.clone()
    atk = ATTACKS.build({"name": "label_flip", "fraction": fraction})
    _, y2 = atk.poison_data(torch.zeros(batch, 2), y, num_classes=10, generator=gen(3))
    assert int((y2 == 9).sum()) == round(fraction * batch)
    assert int((y2 == 0).sum()) == batch - round(fraction * batch)
    assert torch.equal(y, y0)
    _, y3 = atk.poison_data(torch.zeros(batch, 2), y, num_classes=10, generator=gen(3))
    assert torch.equal(y2, y3)  # a function of the generator


def test_backdoor_poison_data():
    b, c, h, w = 10, 2, 6, 5
    x = torch.rand(b, c, h, w, generator=gen(1)) * 0.5
    y = torch.arange(b) % 4 + 1  # never the target 0
    x0, y0 = x.clone(), y.clone()
    atk = Backdoor(poison_fraction=0.3, trigger_size=2, target_label=0)
    x2, y2 = atk.poison_data(x, y, num_classes=5, generator=gen(2))
    assert torch.equal(x, x0) and torch.equal(y, y0)
    poisoned = (y2 == 0).nonzero().flatten()
    assert poisoned.numel() == 3
    vmax = x0.max()
    for i in range(b):
        if i in poisoned:
            assert torch.all(x2[i, :, h - 2 :, w - 2 :] == vmax)
            mask = torch.ones(c, h, w, dtype=torch.bool)
            mask[:, h - 2 :, w - 2 :] = False
            assert torch.equal(x2[i][mask], x0[i][mask])  # nothing else touched
        else:
            assert torch.equal(x2[i], x0[i]) and y2[i] == y0[i]


def test_backdoor_explicit_value_and_full_fraction():
    x = torch.zeros(4, 1, 4, 4)
    atk = Backdoor(poison_fraction=1.0, trigger_size=1, trigger_value=2.5, target_label=3)
    x2, y2 = atk.poison_data(x, torch.zeros(4, dtype=torch.long), num_classes=4, generator=gen())
    assert torch.equal(y2, torch.full((4,), 3))
    assert torch.all(x2[:, 0, 3, 3] == 2.5) and float(x2.sum()) == 4 * 2.5


def test_backdoor_refuses_non_images():
    atk = ATTACKS.build("backdoor")
    with pytest.raises(ValueError, match=r"\(8, 20\)"):
        atk.poison_data(torch.zeros(8, 20), torch.zeros(8, dtype=torch.long), num_classes=10, generator=gen())
    with pytest.raises(ValueError, match=r"\(8, 28, 28\)"):
        apply_trigger(torch.zeros(8, 28, 28), size=3, value=1.0)
    with pytest.raises(ValueError, match="target_label"):
        Backdoor(target_label=10).poison_data(
            torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), num_classes=10, generator=gen()
        )


def test_apply_trigger_stamps_all():
    x = torch.zeros(3, 2, 5, 5)
    x2 = apply_trigger(x, size=3, value=1.0)
    assert float(x.sum()) == 0
    assert torch.all(x2[:, :, 2:, 2:] == 1) and float(x2.sum()) == 3 * 2 * 9


class CornerModel(nn.Module):
    """Two classes: logits favour class 0 when the bottom-right pixel is bright and the top-left
    one is dark, class 1 otherwise."""

    def forward(self, x):
        fooled = ((x[:, 0, -1, -1] > 0.5) & (x[:, 0, 0, 0] < 0.5)).float()
        return torch.stack([fooled, 1 - fooled], dim=1)


def test_backdoor_accuracy():
    x = torch.zeros(8, 1, 4, 4)
    y = torch.tensor([0, 1, 1, 1, 0, 1, 1, 1])  # two samples have the target label: excluded
    x[[0, 2, 3], 0, 0, 0] = 0.9  # top-left bright: immune (sample 0 is excluded anyway)
    model = CornerModel().train()
    atk = Backdoor(target_label=0, trigger_size=2, trigger_value=1.0)
    # non-target samples: 1, 2, 3, 5, 6, 7; immune: 2, 3 -> 4 / 6 fooled
    assert backdoor_accuracy(model, x, y, attack=atk, batch_size=4) == pytest.approx(4 / 6)
    assert backdoor_accuracy(model, x, y, attack=atk, batch_size=1) == pytest.approx(4 / 6)
    assert model.training  # mode restored
    # trigger_value None: the clean test set's max, 0.9 > 0.5: same result, from a spec
    assert backdoor_accuracy(model, x, y, attack={"name": "backdoor", "trigger_size": 1}) == pytest.approx(4 / 6)
    # a dim trigger fools no one
    assert backdoor_accuracy(model, x, y, attack=Backdoor(trigger_value=0.4)) == 0.0
    # target 1: only samples 0 and 4 count; 4 is fooled into class 0, immune 0 stays at class 1
    assert backdoor_accuracy(model, x, y, attack=Backdoor(target_label=1, trigger_value=1.0)) == 0.5
    with pytest.raises(ValueError, match="other than the target"):
        backdoor_accuracy(model, x, torch.zeros(8, dtype=torch.long), attack=atk)
    with pytest.raises(ValueError, match="backdoor attack"):
        backdoor_accuracy(model, x, y, attack=ATTACKS.build("sign_flip"))
