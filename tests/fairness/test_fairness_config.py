"""Bad fairness input is refused when the config loads, with one line naming it."""

from __future__ import annotations

import pytest

from fedops.config import ConfigError, load_config, parse_config

ADULT = {"data": {"name": "adult"}, "partition": {"num_clients": 5, "name": "sensitive_dirichlet", "alpha": 0.5}}


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"data": {"name": "adult", "sensitive": "gender"}},
         "data.sensitive = 'gender' is not a categorical column of 'adult'; allowed: workclass"),
        ({"data": {"name": "compas", "sensitive": "priors_count"}}, "'priors_count' is not a categorical column"),
        ({"data": {"name": "adult", "privileged": "Martian"}}, "data.privileged = 'Martian' is not a value of 'sex'"),
        ({"fairness": {"checks": {"max_dpd": 0.1}}},
         "fairness.checks ['max_dpd'] measure group fairness, but data set 'fashion_mnist' has no sensitive attribute"),
        ({"fairness": {"enabled": False, "checks": {"min_client_acc_worst10": 0.5}}}, "need fairness measured"),
        ({"server": {"aggregator": {"name": "fairfed"}}},
         "server.aggregator = 'fairfed' needs a sensitive attribute; data set 'fashion_mnist' has none"),
        ({**ADULT, "data": {"name": "adult", "sensitive": "race", "binary": False},
          "server": {"aggregator": {"name": "fairfed"}}},
         "needs a binary sensitive attribute; data.sensitive = 'race' with data.binary: false has 5 groups"),
        ({**ADULT, "server": {"aggregator": {"name": "fairfed", "beta": -0.5}}},
         "server.aggregator: beta = -0.5: Input should be greater than or equal to 0"),
        ({"server": {"aggregator": {"name": "qffl", "q": -1}}},
         "server.aggregator: q = -1: Input should be greater than or equal to 0"),
        ({**ADULT, "server": {"aggregator": {"name": "qffl", "q": 1}}, "secagg": {"enabled": True}},
         "weighs each update by its client's loss"),
        ({**ADULT, "secagg": {"enabled": True}, "fairness": {"checks": {"min_client_acc_worst10": 0.5}}},
         "read per-client accuracies, which secure aggregation does not release"),
        ({"partition": {"name": "sensitive_dirichlet"}},
         "partition 'sensitive_dirichlet' skews the sensitive attribute, but data set 'fashion_mnist' has none"),
        ({"client": {"reweighing": "global"}}, "client.reweighing weights rows by their group"),
        ({**ADULT, "client": {"reweighing": "sometimes"}}, "client.reweighing"),
        ({"client": {"reweighing": "fairbatch"}}, "client.reweighing weights rows by their group"),
        ({**ADULT, "client": {"reweighing": "fairbatch", "fairbatch_alpha": 0}}, "fairbatch_alpha"),
        ({**ADULT, "client": {"reweighing": "fairbatch", "fairbatch_target": "dp"}}, "fairbatch_target"),
        ({"data": {"name": "adult", "sensitive": "race", "binary": False}, "client": {"reweighing": "fairbatch_global"}},
         "needs a binary sensitive attribute and a binary label"),
        ({**ADULT, "partition": {"num_clients": 16, "name": "natural_id", "column": "schooling"}},
         "partition.column = 'schooling' is not a categorical column of 'adult'; allowed: workclass, education"),
        ({**ADULT, "fairness": {"holdout": 1.0}}, "fairness.holdout = 1.0"),
        ({**ADULT, "fairness": {"checks": {"max_dpd": 1.5}}}, "max_dpd = 1.5"),
        ({**ADULT, "fairness": {"checks": {"max_dpdd": 0.1}}}, "max_dpdd: unknown key"),
    ],
)
def test_bad_fairness_config_is_refused(data, needle):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_fairness_is_on_for_data_with_a_sensitive_attribute():
    assert parse_config(ADULT).fairness_on
    assert not parse_config({}).fairness_on
    assert parse_config({"fairness": {"enabled": True}}).fairness_on  # client-level fairness on any data set


@pytest.mark.parametrize("preset", ["configs/adult.yaml", "configs/compas.yaml", "configs/qffl_fmnist.yaml"])
def test_fairness_presets_load(preset):
    assert load_config(preset).fairness_on
