"""``nnunet-mamba zoo``: counts on fake tensors agree with the recorded originals and with hand counts."""
import json

import pytest

from nnunet_mamba.cli.main import main
from nnunet_mamba.zoo import example_arch_kwargs, network_card
from test_faithful_networks import _param_counts


def card(name, plan="hippocampus"):
    arch, patch, n_in, n_out, batch = example_arch_kwargs(plan)
    return network_card(name, arch, n_in, n_out, patch, batch)


@pytest.mark.parametrize("name,entry", [("umamba_bot", "umamba_bot_3d/hippocampus"),
                                        ("umamba_enc", "umamba_enc_3d/hippocampus")])
def test_parameters_equal_the_originals_at_the_stock_hippocampus_plan(name, entry):
    assert round(card(name)["params_m"] * 1e6) == _param_counts()[entry]["params"]


def test_scan_updates_and_mamba_compute_by_hand():
    # U-Mamba Bot: one raster Mamba (d_inner 512, d_state 16) over the 5x7x5 bottleneck of a 40x56x40 patch
    bot = card("umamba_bot")
    assert bot["scan_updates_g"] * 1e9 == pytest.approx(5 * 7 * 5 * 512 * 16)
    # its projections: in_proj 256->1024, x_proj 512->48, dt_proj 16->512, out_proj 512->256, conv1d k4 on 512
    per_token = 256 * 1024 + 512 * 48 + 16 * 512 + 512 * 256 + 512 * 4
    assert bot["gmac_mamba"] * 1e9 == pytest.approx(175 * per_token, rel=0.01)
    plain = card("nomamba")
    assert plain["gmac_mamba"] == 0 and plain["scan_updates_g"] == 0
    assert card("segmamba", "brats")["gmac_other"] > card("umamba_bot", "brats")["gmac_other"] > 0


def test_cli_table_json_and_errors(capsys):
    assert main(["zoo", "--example", "brats", "-n", "umamba_enc", "segmamba", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["network"] for r in out["rows"]] == ["umamba_enc", "segmamba"]
    assert all(r["memory_estimate_gb"] > 0 for r in out["rows"])
    assert "bowang-lab/U-Mamba" in out["rows"][0]["source"] and "ge-xing/SegMamba" in out["rows"][1]["source"]
    assert main(["zoo", "--example", "hippocampus", "-n", "nope"]) == 2
    assert "unknown network" in capsys.readouterr().err
    assert main(["zoo"]) == 2
